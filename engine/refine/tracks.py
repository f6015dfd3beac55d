"""Geometry feedback into the 2D tracks (the ``refine`` stage), on arrays.

:func:`refine_tracks` takes a solved shot (cameras in the world frame, lifted ``tracks_3d`` /
``group`` / ``reproj_error``) and the tracker's 2D output, and rewrites the 2D tracks of every
track whose 3D is reliable:

- static: the track's point is re-fitted robustly on its query ray (:mod:`.static`); when most
  of the tracker's visible observations agree with it (within ``tau`` px) the track becomes
  static (group -1, its ``tracks_3d`` the fitted point, even if the lift had called it moving
  because a few drifted frames spoilt its least-squares fit) and its 2D position at EVERY frame is
  the projection of that point (drift-free, defined through occlusion and out of frame);
- rigid moving groups (lift ``kind == "rigid"``, track reprojection error within the static
  threshold): the projection of ``tracks_3d``, which follows the group's rigid motion;
- with the footage, tracks the tracker lost (none of the above) get a second chance: the depth on
  the query ray whose projections match the query appearance in most frames (a per-point plane
  sweep through the ONNX descriptors); accepted when >= 50 % of the in-frame frames match
  (30 % for tripod shots), static from then on; an ambiguous depth (another depth matches nearly
  as often) halves the confidence. On plain surfaces every depth matches, so the sweep's score
  carries a prior towards the local surface of the textured static tracks around the query pixel
  (a robust plane, :mod:`.neighbours`); a static fit on a plain query pixel with few agreeing
  observations and a depth off that surface is doubted and placed by the sweep instead;
- in a shot without parallax (tripod, or a camera path under 5 % of the scene depth) a lost track
  on a plain query pixel, which neither its appearance nor the tracker can place, is put on its
  query ray anyway (depth barely matters there), visible where in frame, at confidence 0.4;
- in a shot with parallax, static points on a plain region of their query frame (a noise-only
  wall) whose current depths scatter about one plane get the plane that aligns the whole region
  and the band around its outline with frames around the query frame (:mod:`.regions`); lost
  plain tracks too where most of their region's points are static (confidence at most 0.6);
- everything else (non-rigid, unreliable, too few observations) keeps the tracker's 2D.

Visibility of refined tracks: in frame (in front of the camera, inside the image) and not judged
occluded. Occluded = the tracker's observation does not agree with the geometry there and the
query-frame appearance does not match at the projected pixel (ONNX descriptor cost above a
threshold learnt per clip from observations where tracker and geometry agree: its 90th
percentile where the tracker lost the point too, its 97th where the tracker still follows
something there, often the occluder). Those two stricter thresholds apply to shots with
parallax (camera path >= 5 % of the scene depth) and a fixed focal only: a shot without
parallax hides nothing behind static surfaces and a zoom changes every point's appearance
scale (measured: there they hid mostly visible points); the others keep the 99th percentile,
tracker-hidden points only. Without footage only the geometry
is used (in-frame test plus the tracker's agreement). Confidence follows the evidence.

Last, with the footage, every visible point-frame must still look like its query pixel
(:mod:`.constancy`): a plain point whose mean colour changed (an object passing in front of a
noise-only wall, which the normalised descriptors cannot see), a textured one whose colour and
pattern both changed, or a textured moving / non-rigid one whose pattern changed (a lost track
left on the background) is hidden.

A plain z-buffer test (any solved point much closer to the camera projecting onto the same place)
was measured and left out: with sparse queries and the lift's noisy moving-object depths only
~15 % of its occlusion calls were right on the sample clip. The final pass runs a restricted one
(:mod:`.occlusion`): only well-fitted static points (and rigid-group points the tracker saw where
the geometry puts them) form the surface, only static fits the tracker does not agree with there
can be hidden, and the points in front must surround the point (not at a silhouette edge).

Memory: tracks are processed in chunks; one decoded frame is held at a time, and the final pass
keeps up to ``DESCRIPTOR_CACHE_MB`` of per-frame descriptors between its passes over the
footage (:class:`.appearance.DescriptorCache`; a short low-resolution clip is then decoded once,
not once per chunk). With a memory
limit (``budget``, :class:`engine.track.memory.MemoryBudget`) the chunks follow the limit, the
(N, T) work arrays live in disk memory maps (in ``work_dir``) when they would not fit, and mapped pages
are released after each chunk; each track is computed independently of its chunk, so the result
does not depend on the limit (beyond the last bit of a few float results: vectorised operations
of another length may round differently).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..lift.static import undistort_queries, undistort_tracks
from ..solve.camera import project
from .static import fit_static, in_image
from ..parallel import loop_workers, ordered_map
from ..progress import stage_of
from ..track.memory import MIB

MIN_INLIER_FRACTION = 0.3   # of the tracker's visible frames, for a track to be re-fitted static
MIN_INLIERS = 3
#: Working bytes per track and frame of one chunk of the static fit / appearance sweep (48 depth
#: candidates x positions, depths, costs and their temporaries).
CHUNK_BYTES_PER_TRACK_FRAME = 48 * 64


def _limited_rows(default: int, T: int, budget, bytes_per_track_frame: int,
                  share: float = 0.25, least: int = 16) -> int:
    """Rows per chunk: ``default`` without a limit, else no more than what ``share`` of the
    spare memory holds (and never more than ``default``)."""
    if budget is None or not budget.limited:
        return default
    fit = budget.block_bytes(0, share) // max(1, bytes_per_track_frame * T)
    return int(max(least, min(default, fit)))


@dataclass
class RefineResult:
    """What :func:`refine_tracks` decided (the 2D / 3D outputs are written in place)."""

    refined: np.ndarray                 # (N,) bool: 2D replaced by geometry
    kind: np.ndarray                    # (N,) int8: 0 tracker kept, 1 static (fit to the
    #                                     tracker), 2 rigid group, 3 static by appearance sweep
    clean_visible: np.ndarray           # (N, T) bool: tracker observations consistent with 3D
    report: dict = field(default_factory=dict)
    agree: np.ndarray | None = None     # (N, T) bool: refined tracks' agreeing observations
    fit_frac: np.ndarray | None = None  # (N,) float32: static fit's inlier fraction
    outputs: tuple = ()                 # the six out_* arrays the call wrote


def _depth_range(tracks_3d, group, c2w: np.ndarray, N: int) -> tuple[float, float]:
    """(near, far) search range along query rays: around the lifted static points' distances."""
    ids = np.flatnonzero(np.asarray(group) < 0)
    if len(ids) > 2000:
        ids = ids[np.linspace(0, len(ids) - 1, 2000).astype(int)]
    X = np.asarray(tracks_3d[np.sort(ids), 0], np.float64) if len(ids) else np.zeros((0, 3))
    return depth_range_of(X, c2w)


def depth_range_of(X: np.ndarray, c2w: np.ndarray) -> tuple[float, float]:
    """(near, far) search range along query rays (world units) around the distances of the
    static world points ``X`` (m, 3) (NaN rows ignored) from the camera path ``c2w``."""
    X = X[np.isfinite(X).all(1)]
    if len(X) < 3:
        span = float(np.linalg.norm(np.ptp(c2w[:, :3, 3], axis=0))) or 1.0
        return 0.05 * span, 1e4 * span
    C = c2w[np.linspace(0, len(c2w) - 1, min(len(c2w), 16)).astype(int), :3, 3]
    d = np.linalg.norm(X[:, None] - C[None], axis=-1).ravel()
    return 0.3 * float(np.percentile(d, 2)), 3.0 * float(np.percentile(d, 98))


def static_accepted(X: np.ndarray, inliers: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """(n,) bool: the static fits ``X`` (n, 3) of :func:`.static.fit_static` that make their
    tracks static points: ``MIN_INLIERS`` (or every frame of a shorter clip) and
    ``MIN_INLIER_FRACTION`` of the visible observations (``vis`` (n, T)) are ``inliers``."""
    ni = inliers.sum(1)
    return (ni >= min(MIN_INLIERS, vis.shape[1])) \
        & (ni >= MIN_INLIER_FRACTION * np.maximum(vis.sum(1), 1)) & np.isfinite(X).all(1)


def inlier_rms(inliers: np.ndarray, res: np.ndarray) -> np.ndarray:
    """(n,) RMS (px) of the residuals ``res`` (n, T) of :func:`.static.fit_static` over each
    track's ``inliers`` (n, T); NaN where it has none."""
    ni = inliers.sum(1)
    return np.where(ni > 0, np.sqrt(np.where(inliers, res ** 2, 0).sum(1) / np.maximum(ni, 1)),
                    np.nan)


def static_track_test(c2w: np.ndarray, K: np.ndarray, sigma: float, static_points: np.ndarray,
                      mode: str = "general") -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The refinement's static test as a function ``test(xy_u, vis) -> (n,) bool`` of tracks
    (undistorted px (n, T, 2), visibility (n, T)): which of them its static fit makes static
    points (:func:`static_accepted`; query ray: each track's first visible frame; depths
    around the solve's static world points ``static_points`` (m, 3); inlier radius
    :func:`tau_px` of the 2D noise ``sigma`` px). Robust to a track's outlier frames, unlike
    the first lift's all-frames test: the rigid-group search uses it to tell drifting
    background from moving objects (:func:`engine.lift.rigid.find_groups`)."""
    near_far = depth_range_of(np.asarray(static_points, np.float64), c2w)
    tau = tau_px(sigma)

    def test(xy_u: np.ndarray, vis: np.ndarray) -> np.ndarray:
        n = len(vis)
        if n == 0:
            return np.zeros(0, bool)
        t0 = np.argmax(vis, 1)
        q = np.c_[t0, xy_u[np.arange(n), t0]].astype(np.float64)
        X, inl, _ = fit_static(xy_u, vis, q, c2w, K, near_far, tau, mode)
        return static_accepted(X, inl, vis) & vis.any(1)
    return test


def tau_px(sigma: float) -> float:
    """Inlier radius (px) of a tracker observation around the geometric prediction."""
    return max(2.5, 4.0 * float(sigma))


def refine_tracks(tracks_2d, visible, confidence, query, tracks_3d, group, reproj_error,
                  c2w: np.ndarray, K: np.ndarray, dist: tuple[float, float, float] | None,
                  mode: str, sigma: float, image_size: tuple[int, int], rigid_groups: set[int],
                  out_tracks_2d, out_visible, out_confidence, out_tracks_3d, out_group,
                  out_reproj, footage=None, kernels=None, chunk: int | None = None,
                  progress=None, budget=None, work_dir=None,
                  occlusion: bool = False, geometry: RefineResult | None = None,
                  assign: Callable[[np.ndarray], tuple] | None = None) -> RefineResult:
    """Refine all N tracks; writes the six ``out_*`` arrays (may alias the inputs' storage only
    for the 3D / group / reproj arrays, which are read chunk by chunk before being written).

    ``tracks_2d`` (N, T, 2) input px, ``visible`` / ``confidence`` (N, T), ``query`` (N, 3),
    ``tracks_3d`` (N, T, 3) world, ``group`` (N,), ``reproj_error`` (N,) px: the lift's output.
    ``c2w`` (T, 4, 4) / ``K`` (T, 3, 3) world-frame cameras, ``dist`` Blender polynomial k1..k3 or
    None, ``mode`` "general" | "tripod", ``sigma`` the solve's 2D noise (px), ``rigid_groups``
    the group ids the lift reported as rigid. ``footage`` an opened :class:`engine.decode.Footage`
    (or None: geometry only). ``budget``: a :class:`engine.track.memory.MemoryBudget` (None:
    unlimited) with ``work_dir`` for the work arrays it puts on disk. ``occlusion``: also hide
    static-fit points that a reliable surface covers (:mod:`.occlusion`; not for tripod shots).
    ``geometry``: the result of an earlier call on the same inputs without footage (a geometry
    pass): its outputs are copied instead of fitting every track again. ``assign``: for a lift
    that left its moving tracks unfitted to its rigid groups (``assign=False``, every moving
    track in the non-rigid group): ``assign(ids) -> (group, tracks_3d, reproj_error)`` of
    those tracks as the full lift gives them (:meth:`engine.lift.Lifter.assign`), called for
    the moving tracks that the static fit does not take.
    """
    from ..track.memory import MemoryBudget

    budget = budget or MemoryBudget()
    t_start = time.monotonic()
    N, T = visible.shape[:2]
    W, H = image_size
    c2w = np.asarray(c2w, np.float64)
    K = np.asarray(K, np.float64)
    tau = tau_px(sigma)
    thr_rigid = max(1.5, 4 * float(sigma))
    # (the static fit scans one depth at a time, so a chunk's arrays are (rows, T)-sized:
    # larger chunks spend less time in Python; 1,736 rows at 48 frames were 1.2x faster than
    # 434 in two threads, and the same bit for bit)
    chunk = chunk or _limited_rows(int(max(64, min(4096, 4_000_000 // max(1, 48 * T)))), T,
                                   budget, CHUNK_BYTES_PER_TRACK_FRAME)
    near, far = _depth_range(tracks_3d, group, c2w, N)
    radius = float(np.median(np.linalg.norm(
        np.asarray(tracks_3d[:min(N, 256), 0], np.float64) - c2w[0, :3, 3], axis=1)[
            np.isfinite(np.asarray(tracks_3d[:min(N, 256), 0])).all(1)])) if mode == "tripod" \
        else 100.0
    if not np.isfinite(radius):
        radius = 100.0
    if geometry is None:
        kind = np.zeros(N, np.int8)
        fit_frac = np.zeros(N, np.float32)    # static fit: inlier fraction of visible observations
        clean = budget.array((N, T), bool, work_dir, fill=False)
        agree = budget.array((N, T), bool, work_dir, fill=False)
    else:
        kind, fit_frac = geometry.kind.copy(), geometry.fit_frac
        clean, agree = geometry.clean_visible, geometry.agree
    ins = (tracks_2d, visible, confidence, query, tracks_3d, group, reproj_error)
    outs = (out_tracks_2d, out_visible, out_confidence, out_tracks_3d, out_group, out_reproj,
            clean, agree)

    def fit_chunk(s: int) -> None:
        sl = slice(s, min(N, s + chunk))
        vis = np.asarray(visible[sl]).astype(bool)
        xy = np.asarray(tracks_2d[sl], np.float64)
        g = np.asarray(group[sl]).astype(int)
        err = np.asarray(reproj_error[sl], np.float64)
        X3 = np.asarray(tracks_3d[sl], np.float64)
        xy_u = undistort_tracks(xy, vis, K, dist)
        q = undistort_queries(query[sl], K, dist)
        Xs, inl, res = fit_static(xy_u, vis, q, c2w, K, (near, far), tau, mode, radius)
        fit_frac[sl] = inl.sum(1) / np.maximum(vis.sum(1), 1)
        st = static_accepted(Xs, inl, vis)
        if assign is not None:      # moving tracks not fitted as static: their rigid groups
            todo = np.flatnonzero(~st & (g >= 0))
            if len(todo):
                g_a, X_a, e_a = assign(s + todo)
                g[todo], X3[todo], err[todo] = g_a, X_a, e_a
        rig = ~st & np.isin(g, list(rigid_groups)) & (err < thr_rigid) & np.isfinite(X3).all((1, 2))
        k = np.where(st, 1, np.where(rig, 2, 0)).astype(np.int8)
        kind[sl] = k
        # positions: projection of the fitted point / the group's motion
        X_new = np.where(st[:, None, None], Xs[:, None, :], X3)
        uv = np.full(xy.shape, np.nan)
        zz = np.full(vis.shape, np.nan)
        ref = st | rig
        for t in range(T):
            if ref.any():
                uv[ref, t], zz[ref, t] = project(c2w[t], K[t], X_new[ref, t], dist)
        d_obs = np.linalg.norm(uv - np.nan_to_num(xy), axis=-1)
        ag = vis & (d_obs < tau)
        agree[sl] = ag & ref[:, None]
        clean[sl] = np.where(ref[:, None], ag, vis)
        inframe = (zz > 0) & in_image(uv, W, H)
        out_xy = np.where(ref[:, None, None], uv, xy)
        # keep positions defined off-screen / behind (NaN only where the geometry gives none)
        out_xy = np.where(np.isfinite(out_xy), out_xy, xy)
        out_tracks_2d[sl] = out_xy.astype(np.float32)
        out_visible[sl] = np.where(ref[:, None], inframe, vis)
        conf = np.asarray(confidence[sl], np.float32)
        out_confidence[sl] = np.where(ref[:, None], np.where(inframe, np.where(ag, 1.0, 0.8), 0.0),
                                      conf).astype(np.float32)
        out_tracks_3d[sl] = X_new.astype(np.float32)
        out_group[sl] = np.where(st, -1, g).astype(np.int32)
        out_reproj[sl] = np.where(st, inlier_rms(inl, res), err).astype(np.float32)
        budget.release(*ins, *outs)

    steps: dict[str, float] = {}        # wall seconds of each step, in order
    t_lap = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        steps[name] = round(now - t_lap[0], 3)
        t_lap[0] = now

    n_chunks = -(-N // chunk)
    stage = stage_of(progress, "refine", total=n_chunks + 1)
    stage.__enter__()
    try:
        if geometry is None:
            # chunks in threads: each writes only its own rows
            for _ in ordered_map(fit_chunk, ((s,) for s in range(0, N, chunk)),
                                 loop_workers(budget)):
                stage.advance()
        else:   # the same fits, already made: copied in row blocks
            outs6 = (out_tracks_2d, out_visible, out_confidence, out_tracks_3d, out_group,
                     out_reproj)
            for s in range(0, N, chunk):
                for dst, src in zip(outs6, geometry.outputs):
                    dst[s:s + chunk] = src[s:s + chunk]
                budget.release(*outs6, *geometry.outputs)
                stage.advance()
        lap("geometry")
        report = {
            "tau_px": round(tau, 3), "depth_search": [round(near, 4), round(far, 4)],
            "n_static": int((kind == 1).sum()), "n_rigid": int((kind == 2).sum()),
            "n_tracker_kept": int((kind == 0).sum()),
            "n_reclassified_static": int(((kind == 1) & (np.asarray(group) >= 0)).sum()),
        }
        ref_all = kind > 0
        ag_obs = agree[ref_all].sum()
        report["agreeing_observations"] = int(ag_obs)
        if footage is not None and ref_all.any():
            f = K[:, 0, 0]
            parallax = mode == "general" and \
                _baseline_ratio(c2w, out_tracks_3d, kind) >= MIN_BASELINE_RATIO
            strict = parallax and float(f.max() / f.min()) <= ZOOM_RATIO
            from .appearance import DescriptorCache

            cache_mb = DESCRIPTOR_CACHE_MB if not budget.limited else \
                min(DESCRIPTOR_CACHE_MB, budget.block_bytes(0, 0.25) / MIB)
            descs = DescriptorCache(footage, kernels, int(cache_mb * MIB))
            report.update(_appearance_visibility(footage, query, out_tracks_2d, out_visible,
                                                 out_confidence, visible, agree, ref_all, T,
                                                 descs, stage, progress, budget, work_dir,
                                                 strict=strict))
            report["visibility"] = "geometry + appearance"
            lap("appearance_visibility")
            thr = report.get("appearance_threshold")
            if thr is not None and dist is None:
                # query contrast in one pass over the query frames: the surface gate needs the
                # static fits' (general mode); the rule for plain points without parallax and
                # the plain regions' planes with it, the tracks the sweep may place (lost ones)
                need = (kind == 0) if mode == "tripod" else (kind == 1) | (kind == 0)
                tex = _query_contrast(footage, query, need, T,
                                      progress.check if progress is not None else None)
                lap("query_contrast")
                sweep_ids, prior, doubted = np.flatnonzero(kind == 0), None, np.zeros(0, int)
                if mode != "tripod":
                    sweep_ids, prior, doubted = _surface_gate(
                        tex, query, c2w, K, W, H, out_tracks_3d, kind, agree, fit_frac,
                        parallax)
                # without parallax a point's depth hardly moves its track: plain ones are placed
                plain = ~(tex[sweep_ids] > ANCHOR_MIN_TEXTURE) \
                    if not parallax and len(sweep_ids) else None
                report.update(_appearance_sweep(
                    footage, sweep_ids, query, c2w, K, (near, far), mode, radius,
                    thr, report.pop("_good_threshold"), W, H, out_tracks_2d, out_visible,
                    out_confidence, out_tracks_3d, out_group, out_reproj, kind, descs,
                    progress, budget, prior=prior, plain=plain))
                lap("depth_sweep")
                # doubted static fits the sweep did not place keep their fit (already written)
                kind[doubted[kind[doubted] != 3]] = 1
                report["n_static_fit_doubted"] = int(len(doubted))
                report["n_static_fit_replaced"] = int((kind[doubted] == 3).sum())
                if parallax:
                    report.update(_plain_regions(
                        footage, query, tex, kind, c2w, K, (near, far), thr, W, H,
                        out_tracks_2d, out_visible, out_confidence, out_tracks_3d, out_group,
                        out_reproj, descs, progress, budget))
                    lap("plain_regions")
            report.pop("_good_threshold", None)
        else:
            report["visibility"] = "geometry only (no footage)" if footage is None else "geometry"
        if occlusion and mode != "tripod":
            from .occlusion import occluded_static

            hid, ht, occ_rep = occluded_static(
                out_tracks_3d, out_visible, agree, kind, c2w, K, dist, (W, H),
                progress.check if progress is not None else None, budget)
            if len(hid):
                out_visible[hid, ht] = False
                out_confidence[hid, ht] = 0.1
            report["n_occluded_by_geometry"] = int(len(hid))
            lap("occlusion")
            report["occlusion_check"] = occ_rep
        if footage is not None:
            from .constancy import constancy_veto

            report["constancy"] = constancy_veto(
                footage, query, out_tracks_2d, out_visible, out_confidence, out_group, budget,
                progress.check if progress is not None else None)
            lap("constancy")
        stage.advance()
    finally:
        stage.__exit__(None, None, None)
    report["n_tracker_kept"] = int((kind == 0).sum())
    # every static point in the end: fitted (1) and placed by appearance or a region plane (3)
    report["n_static"] = int(((kind == 1) | (kind == 3)).sum())
    report["seconds"] = round(time.monotonic() - t_start, 3)
    report["step_seconds"] = steps
    return RefineResult(refined=kind > 0, kind=kind, clean_visible=clean, report=report,
                        agree=agree, fit_frac=fit_frac,
                        outputs=(out_tracks_2d, out_visible, out_confidence, out_tracks_3d,
                                 out_group, out_reproj))


def _baseline_ratio(c2w: np.ndarray, tracks_3d, kind: np.ndarray, sample: int = 2000) -> float:
    """Extent of the camera path (world units) over the median distance of the static-fit
    points from the mean camera centre: how much parallax the shot has (0 for a tripod)."""
    C = c2w[:, :3, 3]
    ids = np.flatnonzero(kind == 1)
    if len(ids) == 0:
        return 0.0
    ids = ids[np.linspace(0, len(ids) - 1, min(sample, len(ids))).astype(int)]
    X = np.asarray(tracks_3d[ids, 0], np.float64)
    X = X[np.isfinite(X).all(1)]
    if len(X) == 0:
        return 0.0
    depth = float(np.median(np.linalg.norm(X - C.mean(0), axis=1)))
    return float(np.linalg.norm(C.max(0) - C.min(0))) / max(depth, 1e-12)


def _appearance_visibility(footage, query, out_tracks_2d, out_visible, out_confidence,
                           visible, agree, ref_all, T, descs, stage, progress, budget=None,
                           work_dir=None, strict: bool = False) -> dict:
    """Mark refined points occluded where the query appearance is absent at the projection and
    the tracker's observation does not agree with the geometry (``strict``: the two thresholds of
    the module docstring; else the tracker must have lost the point too). (With a memory limit:
    costs on disk, rows in chunks; the thresholds are still learnt from all agreeing observations
    at once.)"""
    from ..track.memory import MemoryBudget
    from .appearance import appearance_costs

    budget = budget or MemoryBudget()
    ids = np.flatnonzero(ref_all)
    q = np.asarray(query[ids], np.float32)
    check = progress.check if progress is not None else None

    def positions(t: int) -> np.ndarray:
        p = np.asarray(out_tracks_2d[ids, t], np.float32)
        budget.release(out_tracks_2d)      # a column of (N, T, 2) touches every page
        return p

    cost = appearance_costs(footage, q, positions, T, check_cancel=check, budget=budget,
                            work_dir=work_dir, descs=descs)
    rows = _limited_rows(len(ids), T, budget, 48, share=0.2, least=1)
    chunks = [slice(s, s + rows) for s in range(0, len(ids), rows)]
    pos = [cost[c][agree[ids[c]] & np.isfinite(cost[c])] for c in chunks]
    pos = pos[0] if len(pos) == 1 else np.concatenate(pos)
    if len(pos) < 50:
        return {"appearance": "skipped: too few agreeing observations to calibrate"}
    thr = float(np.percentile(pos, OCCLUDED_PCT))
    good_thr = float(np.percentile(pos, SWEEP_GOOD_PERCENTILE))
    thr_hid, thr_vis = np.percentile(pos, [OCCLUDED_PCT_TRACKER_HIDDEN,
                                           OCCLUDED_PCT_TRACKER_VISIBLE]) if strict else (thr, np.inf)
    del pos
    n_occ = 0
    for c in chunks:
        idc = ids[c]
        cc = np.asarray(cost[c])
        ag = agree[idc]
        vis_trk = np.asarray(visible[idc]).astype(bool)
        with np.errstate(invalid="ignore"):
            occ = ~ag & np.where(vis_trk, cc > thr_vis, cc > thr_hid)
        v = np.asarray(out_visible[idc]).astype(bool)
        newv = v & ~occ
        cf = np.asarray(out_confidence[idc], np.float32)
        good = np.clip(1.0 - np.nan_to_num(cc, nan=thr) / (2 * thr), 0.0, 1.0)
        cf = np.where(newv, np.maximum(cf * 0.5 + 0.5 * good, 0.3), np.where(occ, 0.1, cf * 0))
        out_visible[idc] = newv
        out_confidence[idc] = cf.astype(np.float32)
        n_occ += int((occ & v).sum())
        budget.release(cost, agree, visible, out_visible, out_confidence)
    return {"appearance_threshold": round(thr, 4), "n_occluded_by_appearance": n_occ,
            "occlusion_rule": "parallax" if strict else "tracker-hidden",
            "_good_threshold": good_thr}


#: A refined point that disagrees with its tracker is occluded where its query appearance is
#: absent at the projection: descriptor cost above this percentile of the costs where tracker
#: and geometry agree -- lower when the tracker also lost it (two witnesses), higher when the
#: tracker still follows something there (often the occluder itself). Measured on static_0 /
#: dynamic_0: the old single rule (99th, tracker-hidden only) left 37 % of truly hidden
#: point-frames visible even with perfect tracker input. Shots with parallax and a fixed focal
#: only (see the module docstring); other shots: OCCLUDED_PCT, tracker-hidden points only.
OCCLUDED_PCT_TRACKER_HIDDEN = 90.0
OCCLUDED_PCT_TRACKER_VISIBLE = 97.0
OCCLUDED_PCT = 99.0
ZOOM_RATIO = 1.05       # focal max / min over the clip above this: a zoom
#: camera path extent / median static depth below this: (nearly) no parallax -- a tripod shot
#: the solve placed in general mode (benchmark tripod_2: 0.006; every moving-camera clip >= 0.16)
MIN_BASELINE_RATIO = 0.05
#: fraction of in-frame frames whose appearance must match (measured with the plain-region step:
#: 0.6 -> 0.5 dynamic_0 AJ +0.042, zoom_0 +0.030, dynamic_2 +0.003, deform_0 -0.002; 0.4 lost
#: deform_0 -0.015 and gained dynamic_0 only +0.005)
SWEEP_MIN_GOOD = 0.5
SWEEP_GOOD_PERCENTILE = 90  # "matches": cost below this percentile of agreeing observations' costs
# tripod: every point is on the background sphere unless it moves; weakly textured background
# (sky, haze) matches less often, and a wrong acceptance costs little (no depth to get wrong)
SWEEP_MIN_GOOD_TRIPOD = 0.3
# the sweep's scores, its surface prior and its coarse scan: :mod:`.sweep`
#: confidence of a plain (textureless) query pixel placed on its ray in a shot without parallax:
#: no appearance evidence, but the (nearly) rotation-only camera fixes its track whatever its depth
PLAIN_NODAL_CONFIDENCE = 0.4
#: most confidence of a plain query pixel placed on its region's plane (:mod:`.regions`): the
#: evidence is the region's, not the point's own
PLAIN_REGION_CONFIDENCE = 0.6
ANCHOR_MIN_TEXTURE = 0.03   # grey-level std (0..1, 7x7 box) for a static-fit track to be an anchor
#: MiB of per-frame descriptors kept between the final pass's streams over the footage (the
#: appearance visibility, each chunk of the sweep and of the plain regions): a 48-frame 320x240
#: clip fits whole (2.4 MiB a frame), so its footage is decoded and described once instead of
#: ~100 times; with a memory limit at most a quarter of the spare memory
DESCRIPTOR_CACHE_MB = 256
#: depth-sweep chunk: candidate positions (48 depths x frames x tracks) scanned at once
SWEEP_CHUNK_ELEMENTS = 4_000_000
PRIOR_RADIUS_FRAC = 0.3     # neighbourhood radius: this fraction of the image diagonal
PRIOR_NEIGHBOURS = 32
# a static fit is doubted (re-placed by the sweep with the prior) on a plain query pixel when few
# observations agree with it and its depth is off the surface; measured on static_0: 18 tracks,
# +2.9 track-equivalents of delta-like score; a looser gate (fraction < 0.85, any offset) loses
DOUBT_MAX_FIT_FRACTION = 0.7
DOUBT_MIN_LOG_DEPTH = 0.2


def _appearance_sweep(footage, ids, query, c2w, K, depth_range, mode, radius, thr_occ, thr_good,
                      W, H, out_tracks_2d, out_visible, out_confidence, out_tracks_3d, out_group,
                      out_reproj, kind, descs, progress, budget=None, prior=None,
                      plain=None) -> dict:
    """Tracks the tracker lost (no static fit from its 2D): choose the depth on the query ray
    whose projections match the query appearance in most frames (a per-point plane sweep over
    the footage), with a prior towards the local surface of the textured static-fit tracks
    around the query pixel (``prior`` (len(ids),) depth along each query ray, NaN / None: no
    prior; :func:`_surface_gate`). Accepted tracks become static (kind 3) and follow that point.

    ``plain`` (len(ids),) bool, shots without parallax only (tripod, or a camera path under
    ``MIN_BASELINE_RATIO`` of the scene depth): query pixels without texture. Their appearance
    cannot confirm any position (on a plain surface the footage's noise is all there is to
    match), and neither can the tracker's drifting observations; but without parallax a static
    point's track is its query ray's whatever its depth, so they are placed static without
    appearance evidence (at the sweep's best depth: the surface prior where there is one),
    visible wherever in frame, at a low confidence (``PLAIN_NODAL_CONFIDENCE``)."""
    from .appearance import sweep_costs
    from .static import _project_many, ray_candidates
    from .sweep import choose, coarse_costs

    if len(ids) == 0:
        return {"n_static_by_appearance": 0}
    T = len(c2w)
    check = progress.check if progress is not None else None
    n_prior = int(np.isfinite(prior).sum()) if prior is not None else 0
    workers = loop_workers(budget)
    frac = SWEEP_MIN_GOOD_TRIPOD if mode == "tripod" else SWEEP_MIN_GOOD
    step = _limited_rows(int(max(16, SWEEP_CHUNK_ELEMENTS // (48 * T))), T, budget,
                         CHUNK_BYTES_PER_TRACK_FRAME)
    # chunks in threads once every frame's descriptors are held (then no chunk decodes or
    # describes a frame, and each does its projections and choices alongside the other's);
    # else one chunk at a time, its frames compared in threads
    outer = workers if workers > 1 and descs.holds_all(T) else 1
    inner = 1 if outer > 1 else workers

    def chunk(s: int) -> tuple[int, int, int, int]:
        sub = ids[s:s + step]
        q = np.asarray(query[sub], np.float64)
        n = len(sub)
        qt = np.clip(np.round(q[:, 0]).astype(int), 0, T - 1)
        X, depths, C, rays = ray_candidates(q, c2w, K, depth_range, mode, radius)
        pr = prior[s:s + step] if prior is not None else np.full(n, np.nan)
        has_pr = np.isfinite(pr)
        log_pr = np.log(np.where(has_pr, pr, 1.0))
        best_d = None
        unique = np.ones(n, bool)
        n_window = 0

        def costs(rows, uv_rows):
            return sweep_costs(footage, q[rows].astype(np.float32), uv_rows, check_cancel=check,
                               descs=descs, workers=inner)

        for it in range(2 if len(depths) > 1 else 1):
            if it == 1:   # finer scan between the neighbours of the coarse best depth
                i = np.searchsorted(depths, best_d).clip(1, len(depths) - 1)
                lo, hi = depths[i - 1], depths[np.minimum(i + 1, len(depths) - 1)]
                fine = np.geomspace(lo, hi, 17, axis=1)
                X = C[:, None] + fine[..., None] * rays[:, None]
            uv, _ = _project_many(X, c2w, K)
            if it == 0:   # the same decisions as from every depth, fewer depths scanned
                cost, n_window = coarse_costs(costs, uv, depths, qt, log_pr, has_pr, thr_good,
                                              thr_occ, frac, footage.input_size)
            else:
                cost = costs(np.arange(n), uv)
                cost[np.arange(n), :, qt] = np.nan      # the query frame matches trivially
            cand = depths if it == 0 else fine
            b, ok, u, has_pr = choose(cost, cand, log_pr, has_pr, thr_good, thr_occ, frac,
                                      coarse=it == 0)
            best_d = cand[b] if it == 0 else fine[np.arange(n), b]
            if it == 0:     # ambiguous along the ray (repetitive or weak texture): not trusted
                unique = u
        Xb = C + best_d[:, None] * rays
        uvb, zb = _project_many(Xb, c2w, K)
        cb = cost[np.arange(n), b]                      # (n, T) at the chosen point
        inframe = (zb > 0) & in_image(uvb, W, H)
        vis = inframe & ~(cb > thr_occ)
        conf = np.where(vis, np.clip(1 - np.nan_to_num(cb, nan=0) / (2 * thr_occ), 0.3, 1), 0.1)
        # ambiguous depth (another depth matches nearly as well): still far better than a lost
        # track on the measured clips, but flagged by a halved confidence
        conf = np.where(unique[:, None], conf, 0.5 * conf)
        n_amb = int((ok & ~unique).sum())
        n_plain = 0
        if plain is not None:
            pl = plain[s:s + step] & ~ok
            vis[pl] = inframe[pl]
            conf[pl] = np.where(inframe[pl], PLAIN_NODAL_CONFIDENCE, 0.0)
            ok = ok | pl
            n_plain = int(pl.sum())
        # (each chunk writes its own tracks' rows)
        n_acc = _write_placed(sub[ok], uvb[ok], vis[ok], conf[ok], Xb[ok], out_tracks_2d,
                              out_visible, out_confidence, out_tracks_3d, out_group, out_reproj,
                              kind, budget)
        return n_acc, n_amb, n_plain, n_window

    counts = np.zeros(4, int)
    for c in ordered_map(chunk, ((s,) for s in range(0, len(ids), step)), outer, check):
        counts += c
    n_acc, n_amb, n_plain, n_window = (int(v) for v in counts)
    return {"n_static_by_appearance": int(n_acc), "n_ambiguous_depth": n_amb,
            "n_plain_nodal": n_plain,
            "n_surface_prior": n_prior, "n_sweep_window_settled": n_window,
            "sweep_good_threshold": round(thr_good, 4)}


def _write_placed(ids, uv, vis, conf, X, out_tracks_2d, out_visible, out_confidence,
                  out_tracks_3d, out_group, out_reproj, kind, budget=None) -> int:
    """Write tracks ``ids`` (k,) as static points ``X`` (k, 3) placed on their query rays (kind 3):
    positions ``uv`` (k, T, 2) (NaN: keep the old one), visibility and confidence (k, T)."""
    if len(ids) == 0:
        return 0
    T = uv.shape[1]
    order = np.argsort(ids)
    a = ids[order]
    xy_old = np.asarray(out_tracks_2d[a], np.float32)
    new_xy = uv[order].astype(np.float32)
    out_tracks_2d[a] = np.where(np.isfinite(new_xy), new_xy, xy_old)
    out_visible[a] = vis[order]
    out_confidence[a] = conf[order].astype(np.float32)
    out_tracks_3d[a] = np.repeat(X[order][:, None], T, 1).astype(np.float32)
    out_group[a] = -1
    out_reproj[a] = np.nan
    kind[a] = 3
    if budget is not None:
        budget.release(out_tracks_2d, out_visible, out_confidence, out_tracks_3d)
    return len(a)


def _plain_regions(footage, query, tex, kind, c2w, K, depth_range, thr_occ, W, H,
                   out_tracks_2d, out_visible, out_confidence, out_tracks_3d, out_group,
                   out_reproj, descs, progress, budget=None) -> dict:
    """Static points on plain query pixels re-placed at the depth of their plain region's plane
    (:mod:`.regions`), in shots with parallax, and lost ones (kind 0) placed there where most of
    their region's points are static; visible where in frame and their query appearance
    is not absent (``thr_occ``), confidence at most ``PLAIN_REGION_CONFIDENCE``."""
    from .appearance import sweep_costs
    from .regions import plain_region_depths
    from .static import _project_many, query_rays

    cand = np.flatnonzero((kind != 2) & (tex <= ANCHOR_MIN_TEXTURE))
    if len(cand) == 0:
        return {"n_plain_region": 0}
    check = progress.check if progress is not None else None
    t0 = time.monotonic()
    static = (kind == 1) | (kind == 3)
    q_all = np.asarray(query[cand], np.float64)

    seen: dict[int, np.ndarray] = {}     # a query frame has up to MAX_REGIONS regions

    def points(t: int) -> np.ndarray:
        if t not in seen:
            ids = np.flatnonzero(static & np.asarray(out_visible[:, t]).astype(bool))
            X = np.asarray(out_tracks_3d[ids, 0], np.float64)
            seen[t] = X[np.isfinite(X).all(1)]
        return seen[t]

    depth, rep = plain_region_depths(footage, q_all, c2w, K, points, depth_range,
                                     static=static[cand], check_cancel=check)
    ok = np.isfinite(depth)
    ids, q, d = cand[ok], q_all[ok], depth[ok]
    T = len(c2w)
    step = _limited_rows(int(max(16, 4e6 // (48 * T))), T, budget, CHUNK_BYTES_PER_TRACK_FRAME)
    for s in range(0, len(ids), step):
        qs = q[s:s + step]
        qt = np.clip(np.round(qs[:, 0]).astype(int), 0, T - 1)
        C, rays = query_rays(qs, c2w, K)
        X = C + d[s:s + step, None] * rays
        uv, z = _project_many(X, c2w, K)
        cost = sweep_costs(footage, qs.astype(np.float32), uv[:, None], check_cancel=check,
                           descs=descs, workers=loop_workers(budget))[:, 0]
        cost[np.arange(len(qs)), qt] = 0.0
        inframe = (z > 0) & in_image(uv, W, H)
        vis = inframe & ~(cost > thr_occ)
        conf = np.where(vis, PLAIN_REGION_CONFIDENCE * np.clip(
            1 - np.nan_to_num(cost, nan=0) / (2 * thr_occ), 0.3, 1), 0.1)
        _write_placed(ids[s:s + step], uv, vis, conf, X, out_tracks_2d, out_visible,
                      out_confidence, out_tracks_3d, out_group, out_reproj, kind, budget)
    rep["plain_region_seconds"] = round(time.monotonic() - t0, 3)
    return rep


def _query_contrast(footage, query, need: np.ndarray, T: int, check=None) -> np.ndarray:
    """(N,) float32 query pixel contrast (:func:`.appearance.query_texture`) of the tracks in
    ``need`` (N,) bool, NaN elsewhere; one streaming pass over the footage's query frames."""
    from .appearance import query_texture

    tex = np.full(len(need), np.nan, np.float32)
    ids = np.flatnonzero(need)
    if len(ids):
        tex[ids] = query_texture(footage, np.asarray(query[ids], np.float32), T,
                                 check_cancel=check)
    return tex


def _surface_gate(tex, query, c2w, K, W, H, out_tracks_3d, kind, agree, fit_frac,
                  parallax: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which tracks the appearance sweep places, and the surface prior of each.

    The local surface (:mod:`.neighbours`) comes from the textured static-fit tracks (kind 1,
    query contrast above ``ANCHOR_MIN_TEXTURE``) seen around each query pixel in its query frame.
    Besides the tracks the tracker lost (kind 0), a static fit is doubted, and handed to the sweep,
    when its own evidence is weak (plain query pixel, contrast below ``ANCHOR_MIN_TEXTURE``, and
    fewer than ``DOUBT_MAX_FIT_FRACTION`` of its visible observations agree with it) and its depth
    disagrees with the surface by more than ``DOUBT_MIN_LOG_DEPTH``; without ``parallax`` every
    depth of a ray projects alike, so depths cannot disagree and the weak evidence alone
    decides. Returns (sorted track ids,
    prior depth along each query ray (NaN: no surface there), the doubted static-fit ids).
    ``tex`` (N,): query pixel contrast of (at least) the static-fit tracks
    (:func:`_query_contrast`).
    """
    from .neighbours import neighbour_depths

    T = len(c2w)
    lost = np.flatnonzero(kind == 0)
    st = np.flatnonzero(kind == 1)
    if len(st) == 0:
        return lost, None, np.zeros(0, int)
    tex_st = tex[st]
    anc = st[tex_st > ANCHOR_MIN_TEXTURE]
    doubt = st[(tex_st <= ANCHOR_MIN_TEXTURE) & (fit_frac[st] < DOUBT_MAX_FIT_FRACTION)]
    cand = np.concatenate([lost, doubt])
    qc = np.asarray(query[cand], np.float64)
    d, _, _ = neighbour_depths(qc, c2w, K, np.asarray(out_tracks_3d[anc, 0], np.float64),
                               lambda t: np.asarray(agree[anc, t]).astype(bool), anchor_ids=anc,
                               track_ids=cand, radius_px=PRIOR_RADIUS_FRAC * float(np.hypot(W, H)),
                               k=PRIOR_NEIGHBOURS)
    nl = len(lost)
    sel = np.ones(len(doubt), bool)
    if parallax:    # the doubted fit's depth against the surface's
        qt = np.clip(np.round(qc[nl:, 0]).astype(int), 0, T - 1)
        own = np.linalg.norm(np.asarray(out_tracks_3d[doubt, 0], np.float64) - c2w[qt, :3, 3],
                             axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            off = np.abs(np.log(own / d[nl:]))
        sel = np.isfinite(off) & (off > DOUBT_MIN_LOG_DEPTH)
    doubted = doubt[sel]
    ids = np.concatenate([lost, doubted])
    prior = np.concatenate([d[:nl], d[nl:][sel]])
    order = np.argsort(ids)
    return ids[order], prior[order], doubted
