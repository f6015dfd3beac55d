"""Static-background segmentation and rigid-body grouping by multi-frame epipolar consistency.

Main entry: :func:`rigid_bodies` (preference clustering, see its docstring); the background is the
body with the largest total track length. The older per-pair vote below (:func:`static_belief`)
is kept as a cheap fallback.

Per-pair vote:

For a set of frame pairs, sequential RANSAC fits up to ``max_models`` fundamental matrices
(each one rigid motion relative to the camera) and labels each track by the model it fits. The
background is then chosen *over the whole clip*, not per frame: an iterated vote in which every
track carries a belief of being static (start: 1), each pair elects the model with the largest
belief-weighted support (weights = track length, since background tracks are long-lived), and each
track's belief becomes the fraction of its pairs in which it sat in the elected model. So a moving
object that fills most of some frames loses to the background that persists across the clip.
"""
from __future__ import annotations

import numpy as np


def frame_pairs(T: int, vis: np.ndarray, max_pairs: int = 60, min_common: int = 20
                ) -> list[tuple[int, int]]:
    """Pairs (a, b) at gaps 1, 2, 4, ... from a spread of anchor frames, with enough overlap."""
    pairs = set()
    anchors = np.unique(np.linspace(0, T - 1, min(T, 12)).round().astype(int))
    g = 1
    gaps = []
    while g < T:
        gaps.append(g)
        g *= 2
    gaps.append(T - 1)
    for a in anchors:
        for g in gaps:
            b = a + g
            if b < T and a != b:
                pairs.add((int(a), int(b)))
    pairs = sorted(pairs, key=lambda p: -(p[1] - p[0]))
    out = []
    for a, b in pairs:
        if (vis[:, a] & vis[:, b]).sum() >= min_common:
            out.append((a, b))
    # prefer wide pairs, but keep some short ones for tracks that live briefly
    if len(out) > max_pairs:
        idx = np.unique(np.linspace(0, len(out) - 1, max_pairs).round().astype(int))
        out = [out[i] for i in idx]
    return out


def multibody_labels(xy: np.ndarray, vis: np.ndarray, pairs: list[tuple[int, int]],
                     thresh: float = 1.5, max_models: int = 3, min_inliers: int = 12
                     ) -> np.ndarray:
    """Per pair, per track: model id 0.. (sequential RANSAC), -1 unexplained, -2 not in pair."""
    n = xy.shape[0]
    lab = np.full((len(pairs), n), -2, dtype=np.int16)
    for k, (a, b) in enumerate(pairs):
        idx = np.flatnonzero(vis[:, a] & vis[:, b])
        lab[k, idx] = -1
        rest = idx
        for m in range(max_models):
            if len(rest) < max(min_inliers, 15):
                break
            p1 = xy[rest, a].astype(np.float64)
            p2 = xy[rest, b].astype(np.float64)
            F, _ = find_fundamental(p1, p2, thresh)
            if F is None:
                break
            # re-score with the Sampson distance so the threshold is the same for every model
            inl = sampson(F, p1, p2) < thresh ** 2
            if inl.sum() < min_inliers:
                break
            lab[k, rest[inl]] = m
            rest = rest[~inl]
    return lab


def find_fundamental(p1: np.ndarray, p2: np.ndarray, thresh: float):
    """Robust F (3, 3) and inlier mask, or (None, None). MAGSAC++, falling back to RANSAC."""
    import cv2

    for method in (cv2.USAC_MAGSAC, cv2.FM_RANSAC):
        try:
            F, mask = cv2.findFundamentalMat(p1, p2, method, thresh, 0.999, 2000)
        except cv2.error:
            continue
        if F is not None and mask is not None and F.shape[0] >= 3:
            return F[:3], mask.ravel().astype(bool)
    return None, None


def find_homography(p1: np.ndarray, p2: np.ndarray, thresh: float):
    """Robust H (3, 3) and inlier mask, or (None, None)."""
    import cv2

    for method in (cv2.USAC_MAGSAC, cv2.RANSAC):
        try:
            H, mask = cv2.findHomography(p1, p2, method, thresh, maxIters=2000, confidence=0.999)
        except cv2.error:
            continue
        if H is not None and mask is not None:
            return H, mask.ravel().astype(bool)
    return None, None


def transfer_error(H: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Forward transfer error |H p1 - p2| in px."""
    q = np.c_[p1, np.ones(len(p1))] @ H.T
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.linalg.norm(q[:, :2] / q[:, 2:3] - p2, axis=1)
    return np.nan_to_num(e, nan=np.inf)


def sampson(F: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Squared Sampson distances (px^2) of correspondences p1 -> p2 under F."""
    x1 = np.c_[p1, np.ones(len(p1))]
    x2 = np.c_[p2, np.ones(len(p2))]
    Fx1 = x1 @ F.T
    Ftx2 = x2 @ F
    num = np.sum(x2 * Fx1, axis=1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return num / np.maximum(den, 1e-12)


def static_belief(labels: np.ndarray, vis: np.ndarray, iters: int = 4,
                  pair_weights: np.ndarray | None = None) -> np.ndarray:
    """Belief in [0, 1] that each track is static background (see module docstring).

    ``pair_weights`` (e.g. the frame gap: short gaps barely separate motions) weight each pair's
    vote. Tracks never seen in any pair get NaN.
    """
    n_pairs, n = labels.shape
    pw = np.ones(n_pairs) if pair_weights is None else np.asarray(pair_weights, dtype=np.float64)
    weight = vis.sum(1).astype(np.float64)
    belief = np.ones(n)
    in_pair = labels > -2
    for _ in range(iters):
        hits = np.zeros(n)
        for k in range(n_pairs):
            lk = labels[k]
            best, best_s = -1, 0.0
            for m in range(int(lk.max()) + 1):
                s = float((weight * belief)[lk == m].sum())
                if s > best_s:
                    best, best_s = m, s
            if best >= 0:
                hits += pw[k] * (lk == best)
        cnt = (in_pair * pw[:, None]).sum(0)
        belief = np.where(cnt > 0, hits / np.maximum(cnt, 1), 0.0)
    return np.where(in_pair.sum(0) > 0, belief, np.nan)


MAX_ANCHORS = 7


def _wide_pairs(T: int, vis: np.ndarray, spread: bool = False, n_max: int = 16
                ) -> list[tuple[int, int]]:
    """Frame pairs at gaps g0, 2 g0, 4 g0, ..., T - 1 (g0 ~ T/12, at most 4) where at least 12
    tracks are seen in both frames, a few anchors per gap (``n_max`` pairs in all) from the
    clip's first frame to the last one the gap allows: long tracks meet wide baselines.

    ``spread``: a gap's pairs start about every ``max(gap, (T - 1) // 6)`` frames, evenly from
    first to last (at most ``MAX_ANCHORS``), so that a track seen in a quarter of the clip,
    wherever it lies, meets pairs of the small gaps: for the moving tracks of dense footage,
    which are seen mid-clip for a third of it and met no pair at the clip's ends."""
    g0 = max(1, min(4, (T - 1) // 12))
    gaps = []
    g = g0
    while g <= T - 1:
        gaps.append(g)
        g *= 2
    if not gaps or gaps[-1] != T - 1:
        gaps.append(T - 1)
    per_gap = max(1, n_max // max(1, len(gaps)))
    step0 = max(1, (T - 1) // 6)
    out = []
    for g in gaps:
        n_anchors = min(MAX_ANCHORS, int(np.ceil((T - 1 - g) / max(g, step0))) + 1) if spread \
            else per_gap
        anchors = np.unique(np.linspace(0, T - 1 - g, n_anchors).round().astype(int))
        for a in anchors:
            if (vis[:, a] & vis[:, a + g]).sum() >= 12:
                out.append((int(a), int(a + g)))
    return out


class _Motion:
    """One rigid-body candidate: its tracks, per-pair F (fit on them alone) and planarity."""

    def __init__(self, ids, xy, vis, pairs, thresh):
        self.ids = ids
        self.F: dict = {}
        planar_votes = []
        for a, b in pairs:
            m = ids[vis[ids, a] & vis[ids, b]]
            if len(m) < 15:
                continue
            p1, p2 = xy[m, a], xy[m, b]
            F, _ = find_fundamental(p1, p2, thresh)
            if F is not None:
                self.F[(a, b)] = F
            H, _ = find_homography(p1, p2, thresh)
            planar_votes.append(H is not None and (transfer_error(H, p1, p2) < 2 * thresh).mean() >= 0.85)
        # a (near-)planar set leaves F undetermined (any epipole fits): not a valid reference
        self.planar = bool(planar_votes) and np.mean(planar_votes) >= 0.8

    def explains(self, ids, xy, vis, thresh) -> float:
        """Fraction of the pair observations of ``ids`` that fit this body's F's."""
        hit = seen = 0
        for (a, b), F in self.F.items():
            m = ids[vis[ids, a] & vis[ids, b]]
            if len(m) == 0:
                continue
            hit += int((sampson(F, xy[m, a], xy[m, b]) < thresh ** 2).sum())
            seen += len(m)
        return hit / seen if seen else 0.0


def _same_body(A: "_Motion", B: "_Motion", xy, vis, pairs, thresh) -> bool:
    if not A.planar and A.F:
        return A.explains(B.ids, xy, vis, thresh) >= 0.8
    if not B.planar and B.F:
        return B.explains(A.ids, xy, vis, thresh) >= 0.8
    # two planes: one F fits both only if they move together (two planes fix F)
    U = _Motion(np.concatenate([A.ids, B.ids]), xy, vis, pairs, thresh)
    return (U.explains(A.ids, xy, vis, thresh) >= 0.8 and U.explains(B.ids, xy, vis, thresh) >= 0.8)


def rigid_bodies(xy: np.ndarray, vis: np.ndarray, thresh: float = 1.0, n_hyp: int = 300,
                 min_cluster: int = 8, seed: int = 0, spread_pairs: bool = False) -> np.ndarray:
    """Group tracks into rigid bodies; returns labels (n,) with 0 = the body with the largest
    total track length (the static background candidate), 1, 2, ... the others, -1 unassigned.

    1. Hypotheses: a random seed track and its k nearest tracks (k = 30/100/300, so from one
       surface up to a whole region) give one fundamental matrix per wide frame pair (8-point,
       least squares on 12 of them). A track *prefers* a hypothesis when it satisfies its epipolar
       constraint (Sampson < ``thresh`` px) in >= 80 % of the pairs where it is seen. Requiring all
       pairs at once is what defeats the plane degeneracy of two-view F (a plane plus any moving
       object fits *some* F in one pair, not the same family in all pairs).
    2. Affinity = Jaccard similarity of preference sets; average-linkage clustering cut at 0.95
       gives pure but possibly fragmented clusters (one per surface).
    3. Clusters are merged greedily (largest first) when the F's fitted on one of them (a
       non-planar one: a plane leaves F undetermined) explain >= 80 % of the other's observations.
    4. The background candidate (label 0) is the body covering the most image area over time
       (grid cells occupied, summed over frames): the background surrounds moving objects even
       where they hold more tracks in some frames.

    ``spread_pairs``: frame pairs spread over the clip (see :func:`_wide_pairs`), for tracks
    that are seen in part of it only (the rigid-group search's sample of dense footage); the
    camera solve's sample is long tracks, for which the pairs at the clip's ends suffice.
    """
    import cv2
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial import cKDTree
    from scipy.spatial.distance import squareform

    n, T = vis.shape
    labels = -np.ones(n, int)
    pairs = _wide_pairs(T, vis, spread_pairs)
    if n < min_cluster or not pairs:
        return labels
    rng = np.random.default_rng(seed)
    nv = np.maximum(vis.sum(1), 1)
    mean_xy = (xy * vis[..., None]).sum(1) / nv[:, None]
    tree = cKDTree(mean_xy)
    prefs = []
    for h in range(n_hyp):
        s = int(rng.integers(n))
        k = min(n, (30, 100, 300)[h % 3])
        _, nn = tree.query(mean_xy[s], k=k)
        nn = np.atleast_1d(nn)
        hits = np.zeros(n)
        seen = np.zeros(n)
        for a, b in pairs:
            cand = nn[vis[nn, a] & vis[nn, b]]
            if len(cand) < 12:
                continue
            samp = rng.choice(cand, 12, replace=False)
            try:
                F, _ = cv2.findFundamentalMat(xy[samp, a], xy[samp, b], cv2.FM_8POINT)
            except cv2.error:
                F = None
            if F is None or F.shape[0] < 3:
                continue
            m = vis[:, a] & vis[:, b]
            hits[m] += sampson(F[:3], xy[m, a], xy[m, b]) < thresh ** 2
            seen[m] += 1
        if seen.max() > 0:
            prefs.append((seen >= min(2, len(pairs))) & (hits >= 0.8 * seen))
    if not prefs:
        return labels
    P = np.array(prefs, dtype=np.float32).T
    has = P.sum(1) > 0
    idx = np.flatnonzero(has)
    if len(idx) < min_cluster:
        return labels
    Ph = P[idx]
    inter = Ph @ Ph.T
    cnt = Ph.sum(1)
    D = 1.0 - inter / np.maximum(cnt[:, None] + cnt[None] - inter, 1)
    np.fill_diagonal(D, 0)
    D = np.clip((D + D.T) / 2, 0, 1)
    Z = linkage(squareform(D, checks=False), "average")
    cl = fcluster(Z, 0.95, "distance")
    sizes = np.bincount(cl)
    order = [c for c in np.argsort(-sizes) if sizes[c] >= min_cluster]
    clusters = [idx[cl == c] for c in order]
    # greedy merge into bodies
    bodies: list[_Motion] = []
    for c in clusters:
        mc = _Motion(c, xy, vis, pairs, thresh)
        for bi, body in enumerate(bodies):
            if _same_body(body, mc, xy, vis, pairs, thresh):
                bodies[bi] = _Motion(np.concatenate([body.ids, c]), xy, vis, pairs, thresh)
                break
        else:
            bodies.append(mc)
    span = max(float(np.ptp(xy[vis][:, 0])), float(np.ptp(xy[vis][:, 1])), 1.0)
    cell = span / 16
    weight = []
    for body in bodies:
        occ = 0
        for t in range(T):
            p = xy[body.ids[vis[body.ids, t]], t]
            if len(p):
                occ += len(np.unique(np.floor(p / cell).astype(np.int64) @ np.array([1, 100003])))
        weight.append(occ)
    for rank, bi in enumerate(np.argsort(weight, kind="stable")[::-1]):
        labels[bodies[bi].ids] = rank
    return labels
