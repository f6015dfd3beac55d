"""Geometric occlusion of static points: a reliable surface in front of the point at its projection.

After the solve every static track has one 3D point and every frame a camera, so whether
something closer to the camera covers a static point at frame t can be tested from the other
solved points. Per frame, the *surface* is the set of reliable points seen there:

- static-fit tracks (refine kind 1) visible at t whose observations agree with their point in
  at least ``MIN_AGREE_FRAMES`` frames (at most T/3): well-determined depths (the
  appearance-sweep tracks are not used: their depths are median 25 % off on the measured clip);
- rigid-group tracks (kind 2) that the tracker saw at t where the geometry puts them.

A *target* is a static-fit track (kind 1) called visible at t although the tracker's observation
there does not agree with its point (where it agrees, the tracker followed it: visible). It is
marked hidden when, among the surface points projecting within ``RADIUS_FRAC`` of the image
diagonal of it, at least ``MIN_FRONT`` and a fraction ``MIN_FRONT_FRACTION`` are in front of it
by more than ``MARGIN`` of its depth, and those in front surround it (the mean of their unit
directions from it is shorter than ``MAX_RESULTANT``): at a silhouette edge the near points lie
on one side only, and a far point just beside the edge stays visible.

Two self-checks guard against wrong depths, using the point-frames where the tracker follows
the point (it agrees with the geometry there: visible) as known-visible controls:

- per point: a point the test calls hidden in more than ``MAX_OWN_CONTROL_FRACTION`` of its own
  control frames has a wrong depth (too far; on a shot with little parallax, such as the
  benchmark's zoom_0, a depth error hardly moves the projection): it is not hidden anywhere;
- per clip: the test's false-alarm rate on all controls predicts how many of its calls are
  wrong; below ``MIN_EST_PRECISION`` estimated precision nothing is hidden.

Measured on the benchmark (320x240, 48 frames). static_0 (a plain near cylinder in front of
the floor and boxes): 2125 point-frames are truly occluded inside the image and ~1900 of them
were called visible. AJ / OA without -> with this test (same solve): static_0 0.6278 -> 0.6323 /
0.9486 -> 0.9559, static_1 0.8473 -> 0.8478, static_2 0.7675 -> 0.7703, dynamic_0 0.4789 ->
0.4794 / 0.8277 -> 0.8307, deform_0 0.4538 -> 0.4550, zoom_0 0.6123 -> 0.6120 (without the
per-point check 0.6076: the reason for it). Tripod shots are left alone
(every point lies on one sphere: depth says nothing). Left out, measured: the appearance-sweep
tracks as targets or surface (their depths are unreliable: more false hides than true ones); a
plain z-buffer over all solved points (on static_0 ~75 % of its calls were wrong); no surround
test (about half the extra calls wrong, at silhouette edges); a parallax-angle gate on the
points' depths (removes true occlusions as much as false ones).

Memory: the (N, T) inputs are read one frame's column (and the agreement count in row blocks)
at a time; the work per frame is O(points in frame); the result is a sparse list.

Coordinates: the world frame of ``cam_to_world``; depths are camera z (OpenCV axes); pixels are
the track file's (distorted when ``dist`` is given, like the output tracks).
"""
from __future__ import annotations

import numpy as np

RADIUS_FRAC = 0.05          # neighbourhood radius / image diagonal (20 px at 320x240)
K_NEAREST = 16              # surface points examined per target at most
MARGIN = 0.2                # "in front": depth < own depth / (1 + MARGIN)
MIN_FRONT = 3
MIN_FRONT_FRACTION = 0.4
MAX_RESULTANT = 0.9         # mean unit direction to the points in front: shorter = surrounded
MIN_AGREE_FRAMES = 16       # a static fit is surface when this many observations agree (<= T/3)
# per-clip self-check: the same test on the point-frames where the tracker agrees with the point
# (it followed it there: visible) gives the false-alarm rate; the test is kept only where it fires
# clearly more often on the disagreeing ones (estimated precision at least this)
MIN_EST_PRECISION = 0.5
MAX_OWN_CONTROL_FRACTION = 0.5   # a point the test calls hidden in more than this fraction of
#                                   the frames where the tracker follows it: not hidden anywhere
ROWS = 65536                # targets examined at once per frame


def _front_nearby(s_uv: np.ndarray, s_front: np.ndarray, t_uv: np.ndarray, t_z: np.ndarray,
                  radius: float, image_size: tuple[int, int]) -> np.ndarray:
    """(m,) bool: whether a surface point within ``radius`` px of each target (``t_uv`` (m, 2)
    in the image of ``image_size`` (W, H), depth ``t_z`` (m,)) may be in front of it, i.e. has
    ``s_front`` (its depth times ``1 + MARGIN``) below the target's depth. Checked on a grid of
    ``radius``-sized cells: every point within ``radius`` lies in the target's cell or one of
    its 8 neighbours, so a target is False only when no surface point near it is in front (the
    test cannot call it hidden); some True ones have none either. Surface points off the image
    count in the border cells (which can only make more targets True)."""
    W, H = image_size
    nx, ny = int(W // radius) + 1, int(H // radius) + 1   # cells -1 .. n cover the image

    def cells(uv):    # cell index + 2: 1 .. n + 2, with a ring of empty cells around
        cx = np.clip(np.floor(uv[:, 0] / radius), -1, nx).astype(np.int64) + 2
        cy = np.clip(np.floor(uv[:, 1] / radius), -1, ny).astype(np.int64) + 2
        return cy, cx

    grid = np.full((ny + 4, nx + 4), np.inf)
    np.minimum.at(grid, cells(s_uv), s_front)
    # the least front depth over each cell's 3x3 neighbourhood
    nb = np.min([grid[1 + dy:ny + 3 + dy, 1 + dx:nx + 3 + dx]
                 for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    ty, tx = cells(t_uv)
    return nb[ty - 1, tx - 1] < t_z


def occluded_static(tracks_3d, visible, agree, kind: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                    dist, image_size: tuple[int, int], check=None, budget=None
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Static-fit points (``kind == 1``) visible in ``visible`` that a reliable surface covers
    (see the module docstring), as (track ids, frame indices) (two int arrays of equal length)
    and a report (counts of the self-check; ``skipped`` when the clip's geometry fails it).

    ``tracks_3d`` (N, T, 3) world points, ``visible`` / ``agree`` (N, T) bool (arrays or memory
    maps; read one frame's column at a time), ``kind`` (N,) refine kinds (0 tracker kept, 1 static
    fit, 2 rigid group, 3 appearance sweep), ``c2w`` (T, 4, 4), ``K`` (T, 3, 3), ``dist`` Blender
    k1..k3 or None, ``image_size`` (W, H) px. ``check``: called once per frame (cancel).
    ``budget``: the refinement's :class:`engine.track.memory.MemoryBudget` (limited: one thread).
    """
    from scipy.spatial import cKDTree

    from ..parallel import loop_workers, ordered_map
    from ..solve.camera import project, vector_norm
    from .static import in_image

    N, T = np.shape(visible)
    W, H = image_size
    none = np.zeros(0, np.int64)
    hid_ids: list[np.ndarray] = []
    hid_t: list[np.ndarray] = []
    n_tgt = 0
    ctl_hits = np.zeros(N, np.int32)
    ctl_seen = np.zeros(N, np.int32)
    tgt_all = np.flatnonzero(kind == 1)
    if len(tgt_all) == 0:
        return none, none, {"n_checked": 0}
    n_agree = np.zeros(N, np.int32)
    for r0 in range(0, N, ROWS):        # row blocks: contiguous in (N, T) memory maps
        n_agree[r0:r0 + ROWS] = np.asarray(agree[r0:r0 + ROWS]).astype(bool).sum(1)
    surf_static = (kind == 1) & (n_agree >= min(MIN_AGREE_FRAMES, max(3, T // 3)))
    rigid = kind == 2
    radius = RADIUS_FRAC * float(np.hypot(W, H))

    def frame(t: int):
        """(hidden target ids, control ids called hidden, control ids, targets checked) at t."""
        vis_t = np.asarray(visible[:, t]).astype(bool)
        ag_t = np.asarray(agree[:, t]).astype(bool)
        surf = np.flatnonzero((surf_static & vis_t) | (rigid & vis_t & ag_t))
        tgt = tgt_all[vis_t[tgt_all]]          # targets (~agree) and the self-check (agree)
        if len(surf) < MIN_FRONT or len(tgt) == 0:
            return none, none, none, 0
        # project the points involved (static points: their one 3D point; rigid: column t)
        ids = np.union1d(surf, tgt)
        X = np.asarray(tracks_3d[ids, t], np.float64)
        uv, z = project(c2w[t], K[t], X, dist)
        ok = np.isfinite(uv).all(1) & (z > 0)
        pos = np.searchsorted(ids, surf)
        s_ok = ok[pos]
        surf, s_uv, s_z = surf[s_ok], uv[pos[s_ok]], z[pos[s_ok]]
        if len(surf) < MIN_FRONT:
            return none, none, none, 0
        tpos = np.searchsorted(ids, tgt)
        inframe = ok[tpos] & in_image(uv[tpos], W, H)
        tgt, tpos = tgt[inframe], tpos[inframe]
        # every target is a control or not; only those with surface in front somewhere near
        # can be hidden, the rest need no neighbour search
        ctl_all = ag_t[tgt]
        seen_f, n_f_tgt = [tgt[ctl_all]], int((~ctl_all).sum())
        near = _front_nearby(s_uv, s_z * (1.0 + MARGIN), uv[tpos], z[tpos], radius, (W, H))
        tgt, tpos = tgt[near], tpos[near]
        hid_f, hit_f = [], []
        if len(tgt) == 0:
            return none, none, seen_f[0], n_f_tgt
        tree = cKDTree(s_uv)
        kk = min(K_NEAREST + 1, len(surf))
        for r0 in range(0, len(tgt), ROWS):
            tg, tp = tgt[r0:r0 + ROWS], tpos[r0:r0 + ROWS]
            dd, nb = tree.query(uv[tp], k=kk, distance_upper_bound=radius)
            dd, nb = dd.reshape(len(tg), kk), nb.reshape(len(tg), kk)
            valid = nb < len(surf)
            nbc = np.minimum(nb, len(surf) - 1)
            valid &= surf[nbc] != tg[:, None]            # never its own surface
            front = valid & (s_z[nbc] * (1.0 + MARGIN) < z[tp][:, None])
            n_v, n_f = valid.sum(1), front.sum(1)
            d = s_uv[nbc] - uv[tp][:, None]
            u = d / np.maximum(vector_norm(d), 1e-6)[..., None]
            res = np.linalg.norm((u * front[..., None]).sum(1), axis=1) / np.maximum(n_f, 1)
            hid = (n_f >= MIN_FRONT) & (n_f >= MIN_FRONT_FRACTION * np.maximum(n_v, 1)) \
                & (res <= MAX_RESULTANT)
            ctl = ag_t[tg]
            hit_f.append(tg[hid & ctl])
            hid_f.append(tg[hid & ~ctl])
        cat = (lambda parts: np.concatenate(parts) if parts else none)
        return cat(hid_f), cat(hit_f), cat(seen_f), n_f_tgt

    # frames in threads; their results are gathered in frame order (the same as one thread)
    for t, (h, hit, seen, n_t) in enumerate(ordered_map(
            frame, ((t,) for t in range(T)), loop_workers(budget), check)):
        np.add.at(ctl_hits, hit, 1)
        np.add.at(ctl_seen, seen, 1)
        n_tgt += n_t
        hid_ids.append(h)
        hid_t.append(np.full(len(h), t, np.int64))
    ids_h = np.concatenate(hid_ids).astype(np.int64) if hid_ids else none
    t_h = np.concatenate(hid_t) if hid_t else none
    # a point "hidden" where the tracker follows it has a wrong depth (too far: on a shot with
    # little parallax a depth error hardly moves its projection): never hide it
    far = int(ctl_hits.sum()) / max(int(ctl_seen.sum()), 1)
    prec = 1.0 - far * n_tgt / max(len(ids_h), 1)
    keep = ctl_hits[ids_h] <= MAX_OWN_CONTROL_FRACTION * ctl_seen[ids_h]
    ids_h, t_h = ids_h[keep], t_h[keep]
    rep = {"n_checked": n_tgt, "n_hidden": int(len(ids_h)), "n_doubted": int((~keep).sum()),
           "false_alarm_rate": round(far, 4), "est_precision": round(prec, 3)}
    if len(ids_h) and prec < MIN_EST_PRECISION:
        rep["skipped"] = "the test fires as often where the tracker follows the point"
        return none, none, rep
    return ids_h, t_h, rep
