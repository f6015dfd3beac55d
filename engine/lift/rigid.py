"""Moving rigid parts: motion segmentation into rigid groups and each group's world motion.

Segmentation (monocular, so no per-frame 3D to compare distances with): two tracks belong to the
same rigid part when they are explained by the same epipolar motion in every frame pair where both
are seen: the affinity of two tracks is the Jaccard similarity of the sets of multi-pair motion
hypotheses they fit (:func:`engine.solve.segment.rigid_bodies`, J-linkage style). Each body is then
*verified* by reconstructing it as a rigid body relative to the
(already solved) camera with the same keyframe/PnP/bundle machinery as the camera solve; every
dynamic track that reprojects through the group's motion within the threshold joins it. A body
most of whose tracks are static points once their outlier frames are dropped (the refinement's
robust static fit, :func:`engine.refine.tracks.static_track_test`) is background that the
first lift's all-frames test failed, and is not verified (``STATIC_BODY_FRACTION``).

Scale rule (monocular object scale is otherwise free): contact with the static surface. In each of
the first 5 frames the group is seen, its lowest 15 % of image points (where an object meets the
ground) get the depth of the static points nearest to them in the image; the scale is the median
over those points and frames of (static depth) / (depth of the point at unit scale). Objects that
stand on or move over static surface come out at the right size; floating objects are sized as if
touching the surface behind/under them. Unit scale and a note when no static point is near.

Each group's per-frame object-to-world motion is rotation ``R_c2w R_obj`` and translation
``s R_c2w t_obj + C`` for frames where the group is registered, and slerp/lerp between them (held
at the ends) where it is hidden, so its points are defined at every frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..solve.camera import pose_to_c2w
from ..solve.incremental import SolveFailure, solve_general
from ..solve.segment import rigid_bodies
from ..solve.select import select_keyframes
from ..solve.triangulate import refine_points, reprojection_errors, triangulate_rays


#: A candidate body of which this fraction or more are tracks that a robust static fit takes
#: as static points (the refinement's own test) is static background that the first lift's
#: all-frames static test failed (drift, occlusion), not solved as a moving object. Measured
#: (the refinement's test on the bodies of the first lift): every body of dense static_0 (no
#: moving object) 0.56-1.00, 17 of 21 above 0.85; on the suite's dynamic_0/1/2 and deform_0 the
#: bodies whose tracks are mostly true static points 0.68-0.98, those holding a moving object
#: 0.00-0.47. Before this rule the group search spent its four groups on such background bodies
#: (dense static_0 and dynamic_0: all four) and never reached the moving objects' bodies.
STATIC_BODY_FRACTION = 0.5


#: A track follows a rigid group (robust fit, :func:`fit_to_groups_robust`) when the group's
#: motion explains at least this fraction of its visible frames (and more than a static point
#: does). The static fit's 0.3 (``engine.refine.tracks.MIN_INLIER_FRACTION``) let background
#: tracks join a group on the frames near their query, where any motion fits.
GROUP_MIN_INLIER_FRACTION = 0.5

#: A track is fitted to a group only when enough of its observations lie within this many
#: inlier radii of the image line of its query ray through the group's motion
#: (:func:`engine.refine.static.ray_line_distances`): no point of the ray projects nearer, so
#: one radius would be exact but for the fit's polish, which moves the point off the ray.
#: Measured on the dense static_0 / dynamic_0 solves (80,398 / 186,747 track-group fits): the
#: polished fits kept more inlier frames than lie within 1.5 radii for 0 / 1 track, within 2
#: radii for none; 2 radii leave 1.1 % / 11 % of the fits to make, with the same output.
RAY_LINE_MARGIN = 2.0


@dataclass
class RigidGroup:
    obj_c2o: np.ndarray        # (T, 4, 4) camera-to-object poses at unit scale (registered frames)
    registered: np.ndarray     # (T,) bool
    scale: float
    obj_to_world: np.ndarray   # (T, 4, 4) object (scaled) to world, every frame
    scale_note: str


def _group_scale(X_obj, vis, c2o, reg, static_uvz_fn, K, n_frames: int = 5):
    """Scale by contact with the static surface under the group (see module docstring)."""
    from scipy.spatial import cKDTree

    ests, first = [], None
    for t in np.flatnonzero(reg):
        m = vis[:, t] & np.isfinite(X_obj).all(1)
        if m.sum() < 5:
            continue
        R = c2o[t, :3, :3]
        C = c2o[t, :3, 3]
        xc = (X_obj[m] - C) @ R
        z = xc[:, 2]
        ok = z > 1e-9
        if ok.sum() < 3:
            continue
        uv = xc[ok, :2] / z[ok, None] * K[t, 0, 0] + K[t, :2, 2]
        z = z[ok]
        suv, sz = static_uvz_fn(t)
        if len(sz) < 8:
            continue
        # the group's lowest image points (largest y: where it meets the ground, if it does)
        low = uv[:, 1] >= np.quantile(uv[:, 1], 0.85)
        # same image row ~ same ground depth: penalise vertical offsets 4x
        aniso = np.array([1.0, 4.0])
        _, nn = cKDTree(suv * aniso).query(uv[low] * aniso, k=8)
        ests.append(float(np.median(np.median(sz[nn], axis=1) / z[low])))
        first = t if first is None else first
        if len(ests) >= n_frames:
            break
    if ests:
        return float(np.median(ests)), (f"contact: depth of the static surface under the group's "
                                        f"lowest points, frames {first}..")
    return 1.0, "no static points near the group: unit scale (warning)"


def _fill(M: np.ndarray, reg: np.ndarray) -> np.ndarray:
    from ..solve.pipeline import _fill_unregistered

    return _fill_unregistered(M, reg)


def find_groups(xy: np.ndarray, vis: np.ndarray, K: np.ndarray, c2w: np.ndarray, sigma: float,
                static_uvz_fn, max_groups: int = 4, min_tracks: int = 20,
                progress=None, static_test=None, stats: dict | None = None,
                spread_pairs: bool = False) -> tuple[list[RigidGroup], np.ndarray]:
    """Segment dynamic tracks ``xy`` (n, T, 2) (undistorted) into rigid groups.

    ``static_test(xy, vis) -> (n,) bool``: which tracks a robust static fit takes as static
    points (:func:`engine.refine.tracks.static_track_test`); a candidate body of which
    ``STATIC_BODY_FRACTION`` or more are such tracks is static background, not solved (see the
    constant); ``stats`` (a dict) then receives ``static_bodies_skipped``. ``spread_pairs``:
    the segmentation's frame pairs are spread over the clip (:func:`engine.solve.segment.
    rigid_bodies`), for a sample of dense input (:func:`engine.lift.group_sample`).
    Returns (groups, label (n,) group index or -1).
    """
    n, T = vis.shape
    label = -np.ones(n, int)
    groups: list[RigidGroup] = []
    thr = max(2.0, 4 * sigma)
    W = 2 * K[0, 0, 2] + 1
    H = 2 * K[0, 1, 2] + 1
    cand = np.flatnonzero(vis.sum(1) >= 5)
    bodies = rigid_bodies(xy[cand], vis[cand], thresh=max(1.0, 3 * sigma),
                          spread_pairs=spread_pairs) if len(cand) >= min_tracks \
        else -np.ones(len(cand), int)
    fits_static = static_test(xy[cand], vis[cand]) if static_test is not None and \
        (bodies >= 0).any() else np.zeros(len(cand), bool)
    n_static_bodies = 0
    for body in range(int(bodies.max()) + 1 if len(bodies) else 0):
        if len(groups) >= max_groups:
            break
        in_body = (bodies == body) & (label[cand] < 0)
        ids = cand[in_body]
        rest = np.flatnonzero((label < 0) & (vis.sum(1) >= 2))
        if len(ids) < min_tracks:
            continue
        if fits_static[in_body].mean() >= STATIC_BODY_FRACTION:
            n_static_bodies += 1
            continue
        if progress is not None:
            progress.check()
        if len(ids) > 600:  # enough to reconstruct the motion; everyone is verified below
            ids = ids[np.sort(np.argsort(-vis[ids].sum(1), kind="stable")[:600])]
        try:
            kfs = select_keyframes(xy[ids], vis[ids], (W, H))
            res = solve_general(xy[ids], vis[ids].copy(), (W, H), K[0, 0, 2], K[0, 1, 2],
                                float(np.median(K[:, 0, 0])), False, False, 0, kfs,
                                sigma=sigma, focals_fixed=K[:, 0, 0].copy())
        except (SolveFailure, np.linalg.LinAlgError, ValueError):
            continue
        reg = res["registered"]
        c2o = pose_to_c2w(res["rvecs"], res["ts"])
        # assign every remaining dynamic track that fits this motion
        Xo, ang = triangulate_rays(xy[rest][:, reg], vis[rest][:, reg], K[reg], c2o[reg])
        Xo = refine_points(Xo, xy[rest][:, reg], vis[rest][:, reg], K[reg], c2o[reg])
        _, rms = reprojection_errors(Xo, xy[rest][:, reg], vis[rest][:, reg], K[reg], c2o[reg])
        member = (rms < thr) & (vis[rest][:, reg].sum(1) >= 2)
        if member.sum() < min_tracks:
            continue
        gi = len(groups)
        label[rest[member]] = gi
        s, note = _group_scale(Xo[member], vis[rest[member]], c2o, reg, static_uvz_fn, K)
        # object (scaled) -> world per registered frame: X_w = c2w_t @ o2c_t @ X_obj
        o2c = np.linalg.inv(c2o)
        o2c[:, :3, 3] *= s
        M = np.einsum("tij,tjk->tik", c2w, o2c)
        M = _fill(M, reg)
        groups.append(RigidGroup(c2o, reg, s, M, note))
    if stats is not None:
        stats["static_bodies_skipped"] = n_static_bodies
    return groups, label


def assign_to_groups(xy_u: np.ndarray, vis: np.ndarray, K: np.ndarray, groups: list[RigidGroup],
                     sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit tracks to each group's motion. Returns (label (n,), object points (n, 3) scaled,
    rms (n,) px); label -1 where no group fits."""
    n = len(xy_u)
    label = -np.ones(n, int)
    best = np.full(n, np.inf)
    Xbest = np.full((n, 3), np.nan)
    thr = max(2.0, 4 * sigma)
    for gi, g in enumerate(groups):
        reg = g.registered
        c2o = g.obj_c2o[reg]
        Xo, _ = triangulate_rays(xy_u[:, reg], vis[:, reg], K[reg], c2o)
        Xo = refine_points(Xo, xy_u[:, reg], vis[:, reg], K[reg], c2o)
        _, rms = reprojection_errors(Xo, xy_u[:, reg], vis[:, reg], K[reg], c2o)
        ok = (rms < thr) & (rms < best) & (vis[:, reg].sum(1) >= 2)
        label[ok] = gi
        best[ok] = rms[ok]
        Xbest[ok] = Xo[ok] * g.scale
    return label, Xbest, best


def fit_to_groups_robust(xy_u: np.ndarray, vis: np.ndarray, query_u: np.ndarray,
                         K: np.ndarray, c2w: np.ndarray, groups: list[RigidGroup], sigma: float,
                         depth_range: tuple[float, float]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit tracks to each group's motion as the refinement fits static points, robust to a
    track's outlier frames: in the group's own frame (cameras ``M_t^-1 c2w_t``, every frame:
    hidden frames follow the group's filled motion) an object point is a static point, so
    :func:`engine.refine.static.fit_static` finds it on the track's query ray and
    :func:`engine.refine.tracks.static_accepted` decides whether the track follows the group.

    ``xy_u`` (n, T, 2) undistorted px, ``vis`` (n, T), ``query_u`` (n, 3) ``[t, x, y]``
    undistorted, ``c2w`` (T, 4, 4) world cameras, ``depth_range`` (near, far) along the query
    rays, world units (distances are the same in a group's frame). A group's fit must keep
    ``GROUP_MIN_INLIER_FRACTION`` of the visible frames and more than the track's static fit;
    only tracks with that many frames near their ray's image line (``RAY_LINE_MARGIN``) are
    fitted, to the static scene and to the group. Returns (label (n,) the group whose fit
    keeps the most inlier frames, -1 where none is accepted; object points (n, 3) in the
    group's scaled frame; RMS (n,) px over the inlier frames)."""
    from ..refine.static import fit_static, ray_line_distances
    from ..refine.tracks import inlier_rms, static_accepted, tau_px

    n = len(xy_u)
    label = -np.ones(n, int)
    Xbest = np.full((n, 3), np.nan)
    rms = np.full(n, np.nan)
    tau = tau_px(sigma)
    need = GROUP_MIN_INLIER_FRACTION * vis.sum(1)
    c2o = [np.einsum("tij,tjk->tik", np.linalg.inv(g.obj_to_world), c2w) for g in groups]
    # only tracks that keep to their query ray's image line in enough frames can follow a
    # group: the fits are the costly part, and most tracks are far off any group's motion
    near = [(vis & (ray_line_distances(xy_u, query_u, c, K) < RAY_LINE_MARGIN * tau)).sum(1)
            for c in c2o]
    rows = [np.flatnonzero(m >= need) for m in near]
    # a group must explain more frames than a static point does (near its query frame any
    # motion fits a few frames), and most of the track
    best = np.zeros(n, int)
    some = np.unique(np.concatenate([np.zeros(0, int), *rows]))
    if len(some):
        _, inl_s, _ = fit_static(xy_u[some], vis[some], query_u[some], c2w, K, depth_range, tau)
        best[some] = inl_s.sum(1)
    for gi in range(len(groups)):
        r = rows[gi][near[gi][rows[gi]] > best[rows[gi]]]
        if not len(r):
            continue
        X, inl, res = fit_static(xy_u[r], vis[r], query_u[r], c2o[gi], K, depth_range, tau)
        ni = inl.sum(1)
        ok = static_accepted(X, inl, vis[r]) & (ni >= need[r]) & (ni > best[r])
        r = r[ok]
        label[r] = gi
        best[r] = ni[ok]
        Xbest[r] = X[ok]
        rms[r] = inlier_rms(inl[ok], res[ok])
    return label, Xbest, rms


def group_tracks_3d(X_obj: np.ndarray, M: np.ndarray) -> np.ndarray:
    """World positions (n, T, 3) of object points (n, 3) under per-frame motions M (T, 4, 4)."""
    return np.einsum("tij,nj->nti", M[:, :3, :3], X_obj) + M[None, :, :3, 3]
