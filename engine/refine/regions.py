"""Depth of static points on plain surfaces from the motion of the whole plain region.

A point on a plain wall has no appearance of its own to follow (its 7x7 patch is render or
sensor noise), so the tracker drifts, its static fit lands at a wrong depth, and the per-point
appearance sweep cannot choose (every depth "matches"). The region the point lies in still moves:
its outline -- the wall's own edges against the sky, the floor line, a colour boundary -- moves
with the surface, and every pixel inside must map onto the same plain colour in the other frames.
So for each connected plain region of a query frame (grey contrast at or below the plain
threshold, the same measure as :func:`.appearance.query_texture`) we fit one plane, inverse depth
``1/z = a x + b y + c`` in normalised image coordinates of the query camera, by photometric
alignment of the region (its pixels and a band around its outline) with a few frames spread
around the query frame through the solved cameras: a fronto-parallel sweep, then Powell's method
on (a, b, c) from the best of it and from the plane through the points' current depths.

The plane replaces the points' depths only where those depths are incoherent: their robust
relative scatter about their own plane is above ``SPREAD_MIN``. Tracks on faint but real texture
(a floor the tracker follows) lie on one plane already and are left alone; measured on the
benchmark, re-fitting those from the photometric score alone is worse (static_1: the floor's
plane scored better at a wrong slant), while the drifting points of a noise-only wall scatter
by 20 % and more.

Coordinates: input pixels (OpenCV) of the undistorted footage, world frame of ``cam_to_world``;
depth is distance along the unit query ray from the query camera's centre (as in
:func:`.static.ray_candidates`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..decode.footage import _rescale_pixels
from .appearance import _gray, contrast_map

MAX_SIDE = 480          # region images are worked on at most this size (px, longer side)
PLAIN_STD = 0.03        # grey std (0..1, 7x7 box) at or below which a pixel is plain
MIN_QUERIES = 3         # candidate queries in a region for it to be fitted
MIN_AREA = 0.005        # of the frame's pixels, for a region to be fitted
MAX_REGIONS = 8         # per query frame, largest first
DILATE = 3              # px (region images) around the outline: the band that carries the signal
BAND_SAMPLES = 3000
INTERIOR_SAMPLES = 750
TARGETS = 9             # frames compared with the query frame
WINDOW = 48             # ... within this many frames of it
COST_CAP = 0.3          # truncation of the summed |RGB| difference (0..1 per channel)
N_FRONTO = 32
MAX_EVALS = 200         # Powell function evaluations per start
MAX_QUERY_FRAMES = 24   # query frames whose regions are considered (most candidates first)
MAX_FITS = 8            # full fits per call (regions with most candidates); the rest reuse planes
SPREAD_MIN = 0.05       # relative inverse-depth scatter above which the current depths are replaced
MIN_SPREAD_POINTS = 6   # static points in the region needed to measure that scatter
MIN_INFRAME = 0.5       # of the samples, for a target frame to count
MIN_SAMPLE_FRAMES = 3   # target frames a sample must land in for its median cost to count


def _targets(t: int, T: int) -> list[int]:
    lo, hi = max(0, t - WINDOW), min(T - 1, t + WINDOW)
    return [int(x) for x in np.unique(np.linspace(lo, hi, TARGETS).round()) if int(x) != t]


def _plane_irls(A: np.ndarray, w: np.ndarray, iters: int = 6) -> np.ndarray:
    """Inverse-depth plane coefficients through (A (n, 3), w (n,)), Cauchy-weighted."""
    c = np.linalg.lstsq(A, w, rcond=None)[0]
    scale = max(float(np.median(np.abs(w))), 1e-12)
    for _ in range(iters):
        r = (A @ c - w) / scale
        wt = 1.0 / (1.0 + (r / 0.05) ** 2)
        c = np.linalg.lstsq(A * wt[:, None], w * wt, rcond=None)[0]
    return c


class _Region:
    """One plain region of a query frame: its support samples (colours ``ref`` (s, 3) and rays
    (s, 3) of the query camera, normalised so z = 1) and the alignment score of a plane."""

    def __init__(self, t, ref, rays, c2w, K, geo, mask, frames):
        self.t, self.ref, self.rays, self.c2w, self.K = t, ref, rays, c2w, K
        self.geo, self.mask, self.frames = geo, mask, frames
        self._tg = None
        self._rel = None
        self._frames_stack = None

    @property
    def tg(self) -> list[int]:
        # target frames: known once the streaming pass has read them all
        if self._tg is None:
            self._tg = [f for f in _targets(self.t, len(self.c2w)) if f in self.frames]
        return self._tg

    def _homographies(self, p: np.ndarray) -> np.ndarray:
        """(J, 3, 3) maps of the query camera's normalised rays (x, y, 1) to the target frames'
        homogeneous region-image pixels through plane ``p``: a point X_c = ray / (p . ray) of
        the query camera is R_j^T R_t X_c + R_j^T (C_t - C_j) in target camera j, so (scaled by
        p . ray) S K_j (R_j^T R_t + R_j^T (C_t - C_j) p^T) ray, S the input -> region pixel
        scaling. All but the plane is made once per region (a score is thousands of them)."""
        if self._rel is None:
            tg = self.tg
            R_t, C_t = self.c2w[self.t, :3, :3], self.c2w[self.t, :3, 3]
            Rj_T = np.transpose(self.c2w[tg, :3, :3], (0, 2, 1))
            self._rel = (Rj_T @ R_t, np.einsum("jik,jk->ji", Rj_T, C_t - self.c2w[tg, :3, 3]),
                         self.geo.matrix() @ self.K[tg])
        A, b, SK = self._rel
        return SK @ (A + b[:, :, None] * p[None, None, :])

    def score(self, p: np.ndarray) -> float:
        """Truncated colour difference of the samples mapped through plane ``p`` (inverse depth
        ``a x + b y + c`` in normalised coordinates) into the target frames: each sample's
        median over the target frames it lands in, averaged over the samples (see
        :func:`_median_sample_cost`). 1.0 (the worst) for a plane that puts any sample behind
        the query camera: the region is a surface seen in the query frame, and such a plane
        would be judged on its other samples alone (measured: the demo clip's back wall got a
        steep plane with its right half behind the camera, 0.45x its depth on the left)."""
        import cv2

        w = self.rays[:, :2] @ p[:2] + p[2]
        if not (w > 1e-12).all() or not self.tg:
            return 1.0
        h = self.rays @ np.transpose(self._homographies(p), (0, 2, 1))      # (J, s, 3)
        hz = h[:, :, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = h[:, :, :2] / hz[:, :, None]
        Hr, Wr = self.mask.shape
        m = (hz > 1e-9 * w) & (uv[..., 0] >= 0) \
            & (uv[..., 0] <= Wr - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= Hr - 1)
        use = np.flatnonzero(m.mean(1) >= MIN_INFRAME)
        if len(use) == 0:
            return 1.0
        # one remap over the target frames stacked top to bottom: OpenCV's own fixed-point
        # positions of each frame's samples, moved down to their frame by whole rows (the same
        # bilinear taps and weights as one remap per frame; a sample's taps stay in its frame)
        u = np.nan_to_num(uv[use]).astype(np.float32)
        ij, frac = cv2.convertMaps(np.ascontiguousarray(u[..., 0]),
                                   np.ascontiguousarray(u[..., 1]), cv2.CV_16SC2)
        ij[..., 1] += (use.astype(np.int16) * np.int16(Hr))[:, None]
        smp = cv2.remap(self._stack(), ij, frac, cv2.INTER_LINEAR) / 255.0     # (J', s, 3)
        c = np.minimum(np.abs(smp - self.ref).sum(-1), COST_CAP)
        return _median_sample_cost(c, m[use])

    def _stack(self) -> np.ndarray:
        """The target frames stacked top to bottom (kept until :meth:`release`)."""
        if self._frames_stack is None:
            self._frames_stack = np.concatenate([self.frames[f] for f in self.tg], axis=0)
        return self._frames_stack

    def release(self) -> None:
        self._frames_stack = None


def _median_sample_cost(c: np.ndarray, inframe: np.ndarray) -> float:
    """Mean over samples of each sample's median cost over the frames it is in (``c``,
    ``inframe``: (J, s)); only samples in at least ``MIN_SAMPLE_FRAMES`` frames (all of them
    when fewer frames are compared) count, and 1.0 when those are under ``MIN_INFRAME`` of
    the samples. A median, not a mean over frames: an object passing in front of part of the
    region in a few target frames (the boxes and cylinders at the foot of static_0's back
    wall) does not pull the plane; measured AJ static_0 / dynamic_0 / zoom_0 0.754 / 0.596 /
    0.808 -> 0.766 / 0.597 / 0.811."""
    n = inframe.sum(0)
    ok = n >= min(MIN_SAMPLE_FRAMES, len(c))
    if not len(c) or ok.mean() < MIN_INFRAME:
        return 1.0
    srt = np.sort(np.where(inframe, c, np.inf)[:, ok], axis=0)     # not in frame: last
    n = n[ok]
    lo = np.take_along_axis(srt, ((n - 1) // 2)[None], 0)[0]
    hi = np.take_along_axis(srt, (n // 2)[None], 0)[0]
    return float(np.mean(0.5 * (lo + hi)))


def plain_region_depths(footage, query: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                        points: Callable[[int], np.ndarray], depth_range: tuple[float, float],
                        static: np.ndarray | None = None,
                        check_cancel: Callable[[], None] | None = None
                        ) -> tuple[np.ndarray, dict]:
    """Depth along each candidate's query ray from its plain region's plane (NaN: not replaced).

    ``query`` (n, 3) ``[t, x, y]`` input px of the candidates (tracks whose query pixel is
    plain). ``points(t)`` returns the world points (m, 3) of the static points known visible
    at frame t; their current depths measure each region's coherence. ``depth_range``
    (near, far) world units for the fronto-parallel start. ``static`` (n,) bool: candidates
    already placed static (None: all); the others (tracks the tracker and the sweep lost, which
    may be on a moving object) get their region's depth only where most of its candidates are
    static. One streaming pass over the footage
    keeps the regions of (at most ``MAX_QUERY_FRAMES``) query frames, a few thousand samples
    each, and their target frames at most ``MAX_SIDE`` px, 8-bit; the fits follow, the regions
    with the most candidates first (``MAX_FITS`` full fits; the others try the planes found).
    """
    import cv2
    from scipy.optimize import minimize

    from ..parallel import loop_workers, ordered_map

    n, T = len(query), len(c2w)
    depth = np.full(n, np.nan)
    static = np.ones(n, bool) if static is None else np.asarray(static, bool)
    report = {"n_regions": 0, "n_regions_replaced": 0, "n_plain_region": 0}
    if n == 0:
        return depth, report
    Win, Hin = footage.input_size
    sc = min(1.0, MAX_SIDE / max(footage.work_size))
    size = (max(1, int(round(footage.work_size[0] * sc))),
            max(1, int(round(footage.work_size[1] * sc))))
    geo = _Scale((Win, Hin), size)
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, T - 1)
    # the query frames with the most candidates (bounds the frames kept and the work)
    fr_ids, fr_counts = np.unique(qt, return_counts=True)
    q_frames = set(fr_ids[np.argsort(-fr_counts, kind="stable")[:MAX_QUERY_FRAMES]].tolist())
    need = set()
    for t in q_frames:
        need.update(_targets(t, T))
    frames, pending = {}, []
    last = min(T - 1, max(need | q_frames))
    for t, rgb in enumerate(footage.frames()):
        if t > last:
            break
        if t not in need and t not in q_frames:
            continue
        if check_cancel:
            check_cancel()
        img = rgb if rgb.shape[1::-1] == size else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        blur = cv2.GaussianBlur(img, (0, 0), 1.0)       # uint8: 3 bytes a pixel kept
        if t in need:
            frames[t] = blur
        if t in q_frames:
            pending.extend(_regions_of(t, img, blur, query, qt, c2w, K, geo, frames))
    near, far = depth_range
    ws = 1.0 / np.geomspace(max(near, 1e-9), max(far, 1.01 * max(near, 1e-9)), N_FRONTO)
    planes: list[tuple[np.ndarray, float]] = []     # accepted planes, world frame: n . X = d
    n_fits = 0
    last = None
    workers = loop_workers()

    def fit(reg: _Region, x0: np.ndarray):
        return minimize(reg.score, x0, method="Powell",
                        options={"xtol": 1e-4, "ftol": 1e-6, "maxfev": MAX_EVALS})

    # most candidates first: they get the full fits, the rest try the planes found so far
    for reg, members in sorted(pending, key=lambda rm: -len(rm[1])):
        if last is not None:
            last.release()      # a region is scored only in its own turn
        last = reg
        if check_cancel:
            check_cancel()
        report["n_regions"] += 1
        cur = _current_plane(reg, points(reg.t))
        if cur is None or not cur[1] > SPREAD_MIN:
            continue       # too few points to tell, or they already lie on one surface
        s_cur = reg.score(cur[0])
        known = [p for p in (_plane_in(pl, c2w[reg.t]) for pl in planes) if p is not None]
        # independent scores and fits run in threads (a score's remap and array work release
        # the GIL); gathered in order, so the choice is a serial run's
        scored = list(zip(ordered_map(reg.score, ((p,) for p in known), workers), known))
        full = n_fits < MAX_FITS
        if full:
            n_fits += 1
            fronto = list(ordered_map(reg.score, ((np.array([0.0, 0.0, w]),) for w in ws),
                                      workers))
            starts = [np.array([0.0, 0.0, ws[int(np.argmin(fronto))]]), cur[0]]
            if scored:
                starts.append(min(scored, key=lambda sp: sp[0])[1])
            for r in ordered_map(fit, ((reg, x0) for x0 in starts), workers):
                scored.append((float(r.fun), r.x))
        if not scored:
            continue
        s_best, p = min(scored, key=lambda sp: sp[0])
        if not s_best < s_cur:
            continue
        if full:     # the planes tried on later regions: at most MAX_FITS of them
            planes.append(_plane_world(p, c2w[reg.t]))
        if static[members].mean() < 0.5:
            members = members[static[members]]
        rays = np.c_[query[members, 1:3], np.ones(len(members))] @ np.linalg.inv(K[reg.t]).T
        w = rays[:, :2] @ p[:2] + p[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            depth[members] = np.where(w > 1e-12, np.linalg.norm(rays, axis=1) / w, np.nan)
        report["n_regions_replaced"] += 1
    if last is not None:
        last.release()
    report["n_region_fits"] = n_fits
    report["n_plain_region"] = int(np.isfinite(depth).sum())
    return depth, report


def _plane_world(p: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, float]:
    """Camera plane ``p`` (inverse depth a x + b y + c, i.e. n_c . X_c = 1 with n_c = p) as a
    world plane (n, d): n . X = d."""
    n = c2w[:3, :3] @ p
    return n, 1.0 + float(n @ c2w[:3, 3])


def _plane_in(plane: tuple[np.ndarray, float], c2w: np.ndarray) -> np.ndarray | None:
    """World plane (n, d) in the camera ``c2w`` as inverse-depth coefficients (None: the plane
    passes through the camera centre)."""
    n, d = plane
    den = d - float(n @ c2w[:3, 3])
    if abs(den) < 1e-12:
        return None
    return (c2w[:3, :3].T @ n) / den


class _Scale:
    """Input px <-> region-image px (pixel centres, OpenCV convention), in float64."""

    def __init__(self, src: tuple[int, int], dst: tuple[int, int]):
        self.src, self.dst = src, dst

    def matrix(self) -> np.ndarray:
        """(3, 3) input px -> region px on homogeneous pixels (as :meth:`to_region`)."""
        sx, sy = self.dst[0] / self.src[0], self.dst[1] / self.src[1]
        return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])

    def to_region(self, uv: np.ndarray) -> np.ndarray:
        return _rescale_pixels(uv, self.src, self.dst, np.float64)

    def to_input(self, uv: np.ndarray) -> np.ndarray:
        return _rescale_pixels(uv, self.dst, self.src, np.float64)


def _current_plane(reg: "_Region", X: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Plane through the current depths of the static points ``X`` (m, 3) seen inside the region
    (its dilated mask) in its query frame, and their robust relative scatter about it."""
    t = reg.t
    xc = (X - reg.c2w[t, :3, 3]) @ reg.c2w[t, :3, :3]
    ok = xc[:, 2] > 1e-12
    xc = xc[ok]
    xn = xc[:, :2] / xc[:, 2:3]
    uv = reg.geo.to_region(xn @ reg.K[t, :2, :2].T + reg.K[t, :2, 2])
    Wr, Hr = reg.mask.shape[1], reg.mask.shape[0]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= Wr - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= Hr - 1)
    ui = np.round(uv[inside]).astype(int)
    sel = np.flatnonzero(inside)[reg.mask[ui[:, 1], ui[:, 0]] > 0]
    if len(sel) < MIN_SPREAD_POINTS:
        return None
    A = np.c_[xn[sel], np.ones(len(sel))]
    w = 1.0 / xc[sel, 2]
    p = _plane_irls(A, w)
    spread = float(np.median(np.abs(A @ p / w - 1.0)))
    return p, spread


def _regions_of(t, img, blur, query, qt, c2w, K, geo, frames):
    """The fittable plain regions of query frame t: [(_Region, candidate indices)]."""
    import cv2

    Hr, Wr = img.shape[:2]
    grey = _gray(img)           # as query_texture measures it
    plain = (contrast_map(grey) <= PLAIN_STD).astype(np.uint8)
    _, lab = cv2.connectedComponents(plain, connectivity=4)
    sel = np.flatnonzero(qt == t)
    uv = np.round(geo.to_region(query[sel, 1:3])).astype(int)
    ql = lab[uv[:, 1].clip(0, Hr - 1), uv[:, 0].clip(0, Wr - 1)]
    labels, counts = np.unique(ql[ql > 0], return_counts=True)
    labels = labels[counts >= MIN_QUERIES]
    if len(labels) == 0:
        return []
    area = np.bincount(lab.ravel(), minlength=int(lab.max()) + 1)[labels]
    keep = area >= MIN_AREA * Wr * Hr
    labels = labels[keep][np.argsort(-area[keep])][:MAX_REGIONS]
    rng = np.random.default_rng(t)
    ker = np.ones((2 * DILATE + 1, 2 * DILATE + 1), np.uint8)
    out = []
    for c in labels:
        comp = (lab == c).astype(np.uint8)
        outer, inner = cv2.dilate(comp, ker), cv2.erode(comp, ker)
        yb, xb = np.nonzero(outer - inner)
        yi, xi = np.nonzero(inner)
        if len(xb) > BAND_SAMPLES:
            k = rng.choice(len(xb), BAND_SAMPLES, replace=False)
            yb, xb = yb[k], xb[k]
        if len(xi) > INTERIOR_SAMPLES:
            k = rng.choice(len(xi), INTERIOR_SAMPLES, replace=False)
            yi, xi = yi[k], xi[k]
        xs, ys = np.r_[xb, xi], np.r_[yb, yi]
        pin = geo.to_input(np.stack([xs, ys], 1).astype(np.float64))
        rays = np.c_[pin, np.ones(len(pin))] @ np.linalg.inv(K[t]).T
        out.append((_Region(t, blur[ys, xs].astype(np.float32) / 255.0, rays, c2w, K, geo, outer, frames), sel[ql == c]))
    return out
