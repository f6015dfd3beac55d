"""World-centric 3D for every track (the ``lift`` stage).

:func:`lift_tracks` takes solved cameras (world frame) and writes, chunk by chunk so memory stays
bounded for ~10^5 tracks, ``tracks_3d`` (N, T, 3), ``group`` (N,) and ``reproj_error`` (N,):

- static tracks (reprojecting within ``max(1.5 px, 4 sigma)`` as one fixed point): one triangulated
  point for all frames, group -1;
- moving tracks: rigid groups (see :mod:`engine.lift.rigid`; searched among a sample of the
  moving tracks on dense input, :func:`group_sample`), group k >= 0, following the group's
  motion at every frame, hidden or not;
- the rest (non-rigid or unexplained motion): one extra group id after the rigid ones (reported as
  ``"kind": "nonrigid"``) with a smooth path from :mod:`engine.lift.nonrigid`; tracks seen in a
  single frame cannot be classified and stay group -1 at the depth of their static surroundings.
"""
from __future__ import annotations

import time
from functools import cached_property

import numpy as np

from ..solve.camera import project
from ..progress import stage_of


def _static_projector(Xs: np.ndarray, c2w: np.ndarray, K: np.ndarray, image_size):
    W, H = image_size
    Xs = Xs[np.isfinite(Xs).all(1)]
    # filled lazily, also from the lift's threads: a frame computed twice at once is the same
    # value stored twice
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def fn(t: int):
        if t not in cache:
            uv, z = project(c2w[t], K[t], Xs)
            m = (z > 0) & np.isfinite(uv).all(1) & (uv[:, 0] > -0.2 * W) & (uv[:, 0] < 1.2 * W) \
                & (uv[:, 1] > -0.2 * H) & (uv[:, 1] < 1.2 * H)
            cache[t] = (uv[m], z[m])
        return cache[t]

    return fn


def reprojection_rms(X3: np.ndarray, xy: np.ndarray, vis: np.ndarray, c2w: np.ndarray,
                     K: np.ndarray, dist) -> np.ndarray:
    """Per-track RMS (px) of per-frame world points ``X3`` (n, T, 3) against pixels ``xy``."""
    n, T = vis.shape
    sq = np.zeros(n)
    cnt = np.zeros(n)
    for t in range(T):
        m = vis[:, t] & np.isfinite(X3[:, t]).all(1)
        if not m.any():
            continue
        uv, _ = project(c2w[t], K[t], X3[m, t], dist)
        e = np.sum((uv - xy[m, t]) ** 2, axis=1)
        e = np.where(np.isfinite(e), e, 1e6)
        sq[m] += e
        cnt[m] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.sqrt(sq / np.maximum(cnt, 1)), np.nan)


def _surroundings(static_points: np.ndarray, c2w: np.ndarray, K: np.ndarray, image_size,
                  radius: float):
    """What the non-rigid paths are placed by: the static points' projector (frame -> (uv, z)
    of those in front of and near the frame) and the default depth where none is near (the
    static points' median distance from the first camera, else ``radius``)."""
    static_fn = _static_projector(static_points, c2w, K, image_size)
    Xs = static_points[np.isfinite(static_points).all(1)]
    default_depth = float(np.median(np.linalg.norm(Xs - c2w[0, :3, 3], axis=1))) if len(Xs) \
        else radius
    return static_fn, default_depth


def _nonrigid_rows(xy: np.ndarray, vis: np.ndarray, xy_u: np.ndarray, K: np.ndarray,
                   c2w: np.ndarray, dist, static_fn, default_depth: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(paths (n, T, 3), reprojection RMS (n,) px) of non-rigid tracks: raw pixels ``xy``,
    visibility ``vis``, undistorted pixels ``xy_u``."""
    from .nonrigid import lift_nonrigid

    X3 = lift_nonrigid(xy_u, vis, K, c2w, static_fn, default_depth)
    return X3, reprojection_rms(X3, np.nan_to_num(xy.astype(np.float64)), vis, c2w, K, dist)


def _group_rows(xy: np.ndarray, vis: np.ndarray, xy_u: np.ndarray, K: np.ndarray,
                c2w: np.ndarray, dist, groups: list, sigma: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moving tracks fitted to the rigid groups: (group index (n,), -1 where none fits; world
    paths (n, T, 3) following the group, NaN where none; reprojection RMS (n,) px, NaN where
    none). ``xy`` raw pixels (n, T, 2), ``xy_u`` undistorted."""
    from .rigid import assign_to_groups, group_tracks_3d

    n, T = vis.shape
    X3 = np.full((n, T, 3), np.nan)
    err = np.full(n, np.nan)
    if not groups:
        return -np.ones(n, int), X3, err
    lab, Xo, _ = assign_to_groups(xy_u, vis, K, groups, sigma)
    for gi, g in enumerate(groups):
        m = lab == gi
        if m.any():
            X3[m] = group_tracks_3d(Xo[m], g.obj_to_world)
    rg = lab >= 0
    if rg.any():
        err[rg] = reprojection_rms(X3[rg], np.nan_to_num(xy[rg].astype(np.float64)), vis[rg],
                                   c2w, K, dist)
    return lab, X3, err


#: Dense input has more moving candidates than the rigid-group search takes
#: (``max_group_tracks``); it then samples, at random (seeded), tracks seen in at least
#: ``1 / GROUP_SAMPLE_MIN_SEEN`` of the frames, from a pool of ``GROUP_SAMPLE_POOL`` times the
#: sample's size of which the robust static test's static points are dropped. The longest
#: tracks, taken before, were all background on dense footage of moving objects: objects turn
#: and pass, so their tracks are short (dense dynamic_0: all 2000 longest seen in >= 43 of 48
#: frames, the tracks on its five objects a median 21-26), and three quarters of the first
#: lift's moving tracks are background that the refinement makes static points. Measured
#: (``python -m benchmarks.dense_groups --clip bench_cache/full/dynamic_0``): the tracks of its
#: best-tracked object in a rigid group 0.6 % -> 37.8 %, with the frame pairs spread
#: (:func:`engine.solve.segment.rigid_bodies`); dense static_0 still ends with no group.
GROUP_SAMPLE_MIN_SEEN = 4
GROUP_SAMPLE_POOL = 4


def group_sample(tracks_2d, visible, dyn_ids: np.ndarray, K: np.ndarray, dist,
                 static_test, n_max: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The moving tracks (sorted indices out of ``dyn_ids``) that the rigid-group search
    segments, and what the sampling did (``{"candidates", "static_dropped", "sampled"}``).
    All of them when there are at most ``n_max``; otherwise see ``GROUP_SAMPLE_POOL``.
    ``static_test(xy_u, vis) -> (n,) bool`` is :func:`engine.refine.tracks.static_track_test`."""
    from .static import undistort_tracks

    dyn_ids = np.asarray(dyn_ids)
    if len(dyn_ids) <= n_max:
        return dyn_ids, {"candidates": int(len(dyn_ids)), "static_dropped": 0,
                         "sampled": int(len(dyn_ids))}
    T = visible.shape[1]
    seen = np.asarray(visible[dyn_ids]).sum(1)
    cand = dyn_ids[seen >= max(5, T // GROUP_SAMPLE_MIN_SEEN)]
    n_cand = len(cand)
    rng = np.random.default_rng(seed)
    if len(cand) > GROUP_SAMPLE_POOL * n_max:
        cand = np.sort(rng.choice(cand, GROUP_SAMPLE_POOL * n_max, replace=False))
    vis = np.asarray(visible[cand]).astype(bool)
    static = static_test(undistort_tracks(np.asarray(tracks_2d[cand]), vis, K, dist), vis)
    keep = cand[~static]
    if len(keep) > n_max:
        keep = np.sort(rng.choice(keep, n_max, replace=False))
    return keep, {"candidates": int(n_cand), "static_dropped": int(static.sum()),
                  "sampled": int(len(keep))}


def lift_tracks(tracks_2d, visible, c2w: np.ndarray, K: np.ndarray,
                dist: tuple[float, float, float] | None, mode: str, sigma: float,
                static_points: np.ndarray, image_size: tuple[int, int], out_tracks_3d,
                out_group, out_reproj, chunk: int = 4096, max_group_tracks: int = 2000,
                radius: float = 100.0, progress=None, rigid: bool = True,
                paths: bool = True, assign: bool = True,
                groups_out: list | None = None) -> dict:
    """Fill ``out_*`` (writable arrays, e.g. TrackFileWriter memmaps) for all N tracks.

    ``c2w`` (T, 4, 4) and ``K`` (T, 3, 3) are the solved cameras in the world frame,
    ``static_points`` (m, 3) world points of the static tracks the solve used (for depth
    continuity). ``rigid=False``: no rigid groups are looked for (every moving track is
    non-rigid). ``paths=False``: the non-rigid tracks (of two or more frames) get their group
    but no path yet (NaN ``tracks_3d`` and ``reproj_error``); :func:`lift_paths` fills the rows
    that need one with the same values (the refinement: most of them become static points).
    ``assign=False`` (implies ``paths=False``): the rigid groups are found but no moving track
    is fitted to them yet: every moving track gets the non-rigid group's id, and the groups'
    ``n_tracks`` are 0; :meth:`Lifter.assign` fits the tracks that need it (the refinement:
    those it does not fit as static points) with the same results. The report's ``deferred``
    lists what was left out (``"group fits"``, ``"paths"``). ``groups_out``: a list that
    receives the rigid groups found (:class:`engine.lift.rigid.RigidGroup`).
    Returns the lift part of the solve report.
    """
    from ..parallel import loop_workers, ordered_map
    from .nonrigid import lift_nonrigid
    from ..refine.tracks import static_track_test
    from .rigid import find_groups
    from .static import lift_static, undistort_tracks

    t0 = time.monotonic()
    paths = paths and assign
    N, T = visible.shape[:2]
    thr = max(1.5, 4 * sigma)
    static_fn, default_depth = _surroundings(static_points, c2w, K, image_size, radius)
    dyn: list[np.ndarray] = []
    single: list[np.ndarray] = []
    st_err: list[np.ndarray] = []
    n_chunks = (N + chunk - 1) // chunk
    stage = stage_of(progress, "lift", total=n_chunks + 2)
    stage.__enter__()
    # threads over chunks of tracks (one under a memory limit: chunks are sized for one)
    workers = loop_workers()

    def static_chunk(s: int):
        sl = slice(s, min(N, s + chunk))
        vis = np.asarray(visible[sl]).astype(bool)
        xy_u = undistort_tracks(np.asarray(tracks_2d[sl]), vis, K, dist)
        X, rms = lift_static(xy_u, vis, K, c2w, mode, radius)
        nv = vis.sum(1)
        static = (rms < thr) & (nv >= 2)
        out = np.full((sl.stop - s, T, 3), np.nan, np.float32)
        out[static] = X[static, None, :].astype(np.float32)
        out_tracks_3d[sl] = out
        g = np.full(sl.stop - s, -1, np.int32)
        out_group[sl] = g
        out_reproj[sl] = np.where(static, rms, np.nan).astype(np.float32)
        return rms[static], s + np.flatnonzero(~static & (nv >= 2)), s + np.flatnonzero(nv < 2)

    try:
        # chunks in threads (each writes its own rows; results gathered in order)
        for e, d, one in ordered_map(static_chunk, ((s,) for s in range(0, N, chunk)), workers):
            st_err.append(e)
            dyn.append(d)
            single.append(one)
            stage.advance()
        dyn_ids = np.concatenate(dyn) if dyn else np.zeros(0, int)
        single_ids = np.concatenate(single) if single else np.zeros(0, int)
        groups = []
        group_stats: dict = {}
        if rigid and len(dyn_ids) >= 20 and mode != "tripod":
            test = static_track_test(c2w, K, sigma, static_points)
            sub, sample_stats = group_sample(tracks_2d, visible, dyn_ids, K, dist, test,
                                             max_group_tracks)
            vis_s = np.asarray(visible[sub]).astype(bool)
            xy_s = undistort_tracks(np.asarray(tracks_2d[sub]), vis_s, K, dist)
            # spread frame pairs for a sample of dense input (its tracks are seen mid-clip);
            # measured on the suite's sparse input (every moving track searched), they changed
            # two clips' groups, for 0.006-0.008 less AJ
            groups, _ = find_groups(xy_s, vis_s, K, c2w, sigma, static_fn, progress=progress,
                                    static_test=test, stats=group_stats,
                                    spread_pairs=len(sub) < len(dyn_ids))
            group_stats["sample"] = sample_stats
        if groups_out is not None:
            groups_out.extend(groups)
        stage.advance()
        n_rigid = len(groups)
        nonrigid_id = n_rigid
        dyn_err, n_nonrigid = [], 0
        n_in_group = np.zeros(n_rigid, int)

        def dynamic_chunk(s: int):
            ids = dyn_ids[s:s + chunk]
            vis = np.asarray(visible[ids]).astype(bool)
            xy = np.asarray(tracks_2d[ids])
            xy_u = undistort_tracks(xy, vis, K, dist)
            lab, X3, err = _group_rows(xy, vis, xy_u, K, c2w, dist, groups if assign else [],
                                       sigma)
            counts = np.bincount(lab[lab >= 0], minlength=n_rigid)
            nr = lab < 0
            if nr.any() and paths:
                X3[nr], err[nr] = _nonrigid_rows(xy[nr], vis[nr], xy_u[nr], K, c2w, dist,
                                                 static_fn, default_depth)
            lab = np.where(nr, nonrigid_id, lab)
            order = np.argsort(ids)
            out_tracks_3d[ids[order]] = X3[order].astype(np.float32)
            out_group[ids[order]] = lab[order].astype(np.int32)
            out_reproj[ids[order]] = err[order].astype(np.float32)
            return err[~nr], counts, int(nr.sum())

        starts = ((s,) for s in range(0, len(dyn_ids), chunk))
        for e, counts, k in ordered_map(dynamic_chunk, starts, workers,
                                        progress.check if progress is not None else None):
            dyn_err.append(e)
            n_in_group += counts
            n_nonrigid += k
        if len(single_ids):
            vis = np.asarray(visible[single_ids]).astype(bool)
            xy_u = undistort_tracks(np.asarray(tracks_2d[single_ids]), vis, K, dist)
            X3 = lift_nonrigid(xy_u, vis, K, c2w, static_fn, default_depth)
            out_tracks_3d[single_ids] = X3.astype(np.float32)
        stage.advance()
    finally:
        stage.__exit__(None, None, None)
    st_err = np.concatenate(st_err) if st_err else np.zeros(0)
    dyn_err = np.concatenate(dyn_err) if dyn_err else np.zeros(0)
    rep = {
        "n_static_tracks": int(len(st_err)), "n_dynamic_tracks": int(len(dyn_ids)),
        "n_unclassified_single_frame": int(len(single_ids)),
        "static_reproj_median_px": round(float(np.median(st_err)), 4) if len(st_err) else None,
        "rigid_reproj_median_px": round(float(np.nanmedian(dyn_err)), 4) if len(dyn_err) else None,
        "groups": [{"id": i, "kind": "rigid", "n_tracks": int(n_in_group[i]),
                    "scale": round(g.scale, 6), "scale_rule": g.scale_note,
                    "frames_seen": int(g.registered.sum())} for i, g in enumerate(groups)],
        "static_threshold_px": round(thr, 3),
        # candidate bodies taken for static background (engine.lift.rigid.STATIC_BODY_FRACTION)
        "static_bodies_skipped": int(group_stats.get("static_bodies_skipped", 0)),
        # the moving tracks the group search segmented (group_sample)
        "group_sample": group_stats.get("sample", {"candidates": 0, "static_dropped": 0,
                                                   "sampled": 0}),
        "seconds": round(time.monotonic() - t0, 3),
    }
    if n_nonrigid:
        rep["groups"].append({"id": nonrigid_id, "kind": "nonrigid", "n_tracks": n_nonrigid,
                              "rule": "depth of surrounding static surface, smoothed"})
    left = ([] if assign or not groups else ["group fits"]) + ([] if paths else ["paths"])
    if left:    # what this lift left to its caller (Lifter.assign / Lifter.paths)
        rep["deferred"] = left
    return rep


def lift_paths(tracks_2d, visible, ids: np.ndarray, c2w: np.ndarray, K: np.ndarray,
               dist: tuple[float, float, float] | None, static_points: np.ndarray,
               image_size: tuple[int, int], out_tracks_3d, out_reproj, radius: float = 100.0,
               chunk: int = 4096) -> None:
    """Fill the rows ``ids`` (sorted track indices) of ``out_tracks_3d`` / ``out_reproj`` with
    their non-rigid paths and reprojection RMS: what :func:`lift_tracks` writes for non-rigid
    tracks with ``paths=True`` (the same inputs give the same values), for the rows a
    ``paths=False`` lift left NaN and that still need one. In chunks of ``chunk`` tracks."""
    from .static import undistort_tracks

    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        return
    static_fn, default_depth = _surroundings(static_points, c2w, K, image_size, radius)
    for s in range(0, len(ids), chunk):
        rows = ids[s:s + chunk]
        vis = np.asarray(visible[rows]).astype(bool)
        xy = np.asarray(tracks_2d[rows])
        X3, err = _nonrigid_rows(xy, vis, undistort_tracks(xy, vis, K, dist), K, c2w, dist,
                                 static_fn, default_depth)
        out_tracks_3d[rows] = X3.astype(np.float32)
        out_reproj[rows] = err.astype(np.float32)


class Lifter:
    """Lifts tracks through one solved shot (:func:`engine.solve.solve_world` returns one):
    the cameras ``c2w`` / ``K`` (world frame), lens ``dist``, ``mode``, 2D noise ``sigma``
    (px), the solve's static world points and the tripod sphere ``radius`` bound.
    ``lifter(tracks_2d, visible, out_tracks_3d, out_group, out_reproj, rigid=True,
    paths=True, assign=True)`` is :func:`lift_tracks` (returns the lift's report; a call with
    rigid groups keeps them in ``groups``); ``lifter.assign(tracks_2d, visible, ids)`` and
    ``lifter.paths(tracks_2d, visible, ids, out_tracks_3d, out_reproj)`` (:func:`lift_paths`)
    make for some tracks what such a lift left out (give them the visibility it was given)."""

    def __init__(self, c2w: np.ndarray, K: np.ndarray, dist, mode: str, sigma: float,
                 static_points: np.ndarray, image_size: tuple[int, int], radius: float,
                 progress=None):
        self.c2w, self.K, self.dist, self.mode, self.sigma = c2w, K, dist, mode, sigma
        self.static_points, self.image_size, self.radius = static_points, image_size, radius
        self.progress = progress
        self.groups: list = []      # the rigid groups of the last lift that looked for them

    @cached_property
    def _depth_range(self) -> tuple[float, float]:
        """(near, far) along query rays of the robust group fits (world units)."""
        from ..refine.tracks import depth_range_of

        return depth_range_of(np.asarray(self.static_points, np.float64), self.c2w)

    def __call__(self, tracks_2d, visible, out_tracks_3d, out_group, out_reproj,
                 rigid: bool = True, paths: bool = True, assign: bool = True,
                 progress=None) -> dict:
        groups: list = []
        rep = lift_tracks(tracks_2d, visible, self.c2w, self.K, self.dist, self.mode,
                          self.sigma, self.static_points, self.image_size, out_tracks_3d,
                          out_group, out_reproj, radius=self.radius,
                          progress=self.progress if progress is None else progress,
                          rigid=rigid, paths=paths, assign=assign, groups_out=groups)
        if rigid:       # (a lift without rigid groups, e.g. of a sample, keeps the last ones)
            self.groups = groups
        return rep

    def assign(self, tracks_2d, visible, ids: np.ndarray, query=None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fit the moving tracks ``ids`` (track indices) to the rigid groups of the last lift
        with rigid groups: what that lift writes for them with ``assign=True``, as it stores
        it: (group id (n,) int32, the non-rigid group's id where none fits; ``tracks_3d``
        (n, T, 3) float32, NaN where none fits (no non-rigid path); ``reproj_error`` (n,)
        float32, NaN where none fits). ``visible``: the visibility that lift was given.

        ``query`` (N, 3) ``[t, x, y]`` input px (all tracks' queries): the tracks that fit
        no group in every frame are also fitted robustly, as the refinement fits static
        points (:func:`engine.lift.rigid.fit_to_groups_robust`: outlier frames dropped;
        ``reproj_error`` over the inlier frames)."""
        from .rigid import fit_to_groups_robust, group_tracks_3d
        from .static import undistort_queries, undistort_tracks

        vis = np.asarray(visible[ids]).astype(bool)
        xy = np.asarray(tracks_2d[ids])
        xy_u = undistort_tracks(xy, vis, self.K, self.dist)
        lab, X3, err = _group_rows(xy, vis, xy_u, self.K, self.c2w, self.dist, self.groups,
                                   self.sigma)
        rest = np.flatnonzero(lab < 0)
        if query is not None and self.groups and len(rest):
            q = undistort_queries(query[np.asarray(ids)[rest]], self.K, self.dist)
            lab_r, Xo, err_r = fit_to_groups_robust(xy_u[rest], vis[rest], q, self.K, self.c2w,
                                                    self.groups, self.sigma, self._depth_range)
            for gi, g in enumerate(self.groups):
                m = lab_r == gi
                if m.any():
                    X3[rest[m]] = group_tracks_3d(Xo[m], g.obj_to_world)
            lab[rest], err[rest] = lab_r, err_r
        return (np.where(lab < 0, len(self.groups), lab).astype(np.int32),
                X3.astype(np.float32), err.astype(np.float32))

    def paths(self, tracks_2d, visible, ids: np.ndarray, out_tracks_3d, out_reproj) -> None:
        lift_paths(tracks_2d, visible, ids, self.c2w, self.K, self.dist, self.static_points,
                   self.image_size, out_tracks_3d, out_reproj, radius=self.radius)
