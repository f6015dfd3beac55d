"""Camera solve and world-centric 3D (the ``solve`` stage; ``lift`` does the per-track 3D).

Python API::

    from engine.solve import solve_trackfile
    report = solve_trackfile("tracks.npz", "solved.npz", focal=None, zoom=False,
                             distortion="none",       # "none" | "k1" | "k1k2"
                             principal_point="auto")  # "auto" | "centre" | (x, y) px

reads a track file from the 2D tracker and writes the same file with ``cam_to_world``, ``K``,
``tracks_3d``, ``group``, ``reproj_error`` filled, ``metadata["solve"]`` = the report and
``metadata["distortion"]`` when distortion was solved. The report's ``warnings`` say what the
user should know (tripod shot, zoom, weak background, ...); ``focal_sigma_rel`` is the relative
1-sigma uncertainty of a self-calibrated focal (0 when given), with a warning when the shot
leaves it poorly constrained (:mod:`engine.solve.observability`); ``principal_point`` [x, y] px
with ``principal_point_solved`` / ``principal_point_sigma_px`` / ``principal_point_reason`` says
whether the footage pinned it (:mod:`engine.solve.principal_point`). Lower level, on numpy arrays:
:func:`solve_cameras` (cameras only, solver frame), :func:`engine.lift.world.choose_world`,
:func:`engine.lift.lift_tracks`. Feedback for the tracker: :func:`predict_positions`.

Heavy libraries (cv2, scipy) are imported inside the submodules that need them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..lift import Lifter
    from ..trackfile import TrackData

__all__ = ["solve_trackfile", "solve_arrays", "solve_world", "solve_cameras", "predict_positions",
           "SolveError", "focal_px_from_mm"]


def __getattr__(name: str) -> Any:
    if name in ("solve_cameras", "SolveError", "CameraSolution"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)


def focal_px_from_mm(focal_mm: float, sensor_width_mm: float, image_width_px: int) -> float:
    """Focal length in pixels from focal and sensor width in millimetres (width-fitted sensor)."""
    if focal_mm <= 0 or sensor_width_mm <= 0:
        raise ValueError("focal and sensor width must be positive millimetres")
    return float(focal_mm) / float(sensor_width_mm) * float(image_width_px)


def solve_world(tracks_2d, visible, confidence, image_size: tuple[int, int], *,
                focal: float | None = None, zoom: bool = False, distortion: str = "none",
                principal_point="auto", progress=None, restarts: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, dict, "Lifter"]:
    """Solve the cameras and choose the world frame, without lifting the tracks.

    Returns (cam_to_world (T, 4, 4) world frame, K (T, 3, 3), report dict, ``lift``), where
    ``lift(tracks_2d, visible, out_tracks_3d, out_group, out_reproj, rigid=True, paths=True)``
    lifts any set of tracks (an :class:`engine.lift.Lifter`: :func:`engine.lift.lift_tracks`
    with the solve's cameras, lens, noise and static points bound) and returns the lift's
    report. Raises :class:`SolveError` when the shot cannot
    be solved. ``restarts``: runs of a self-calibrated solve (None: the default,
    :func:`engine.solve.pipeline.solve_cameras`).
    """
    from ..lift import Lifter
    from ..lift.world import apply_to_cameras, apply_to_points, choose_world
    from .pipeline import solve_cameras
    from .rotation import SPHERE_RADIUS

    sol = solve_cameras(tracks_2d, visible, confidence, image_size, focal=focal, zoom=zoom,
                        distortion=distortion, principal_point=principal_point,
                        progress=progress, restarts=restarts)
    report = sol.report
    S, world = choose_world(sol.cam_to_world, sol.sample_points[sol.sample_static], sol.mode)
    c2w = apply_to_cameras(S, sol.cam_to_world)
    pts = apply_to_points(S, sol.sample_points[sol.sample_static])
    report["world"] = world
    dist = sol.dist if any(sol.dist) else None
    scale = float(np.cbrt(np.linalg.det(S[:3, :3])))

    return c2w, sol.K, report, Lifter(c2w, sol.K, dist, sol.mode, sol.sigma, pts, image_size,
                                      SPHERE_RADIUS * scale, progress)


def solve_arrays(tracks_2d, visible, confidence, image_size: tuple[int, int], out_tracks_3d,
                 out_group, out_reproj, *, focal: float | None = None, zoom: bool = False,
                 distortion: str = "none", principal_point="auto",
                 progress=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Solve cameras and lift every track; writes into the three ``out_*`` arrays.

    Returns (cam_to_world (T, 4, 4) world frame, K (T, 3, 3), report dict).
    Raises :class:`SolveError` when the shot cannot be solved.
    """
    c2w, K, report, lift = solve_world(tracks_2d, visible, confidence, image_size, focal=focal,
                                       zoom=zoom, distortion=distortion,
                                       principal_point=principal_point, progress=progress)
    lift_into(report, lift, tracks_2d, visible, out_tracks_3d, out_group, out_reproj)
    return c2w, K, report


def lift_into(report: dict, lift, tracks_2d, visible, out_tracks_3d, out_group,
              out_reproj, **kw) -> None:
    """Lift the tracks into ``out_*`` and record the lift's report and wall time (``kw``: the
    lift's options, e.g. ``paths=False``)."""
    import time

    t0 = time.monotonic()
    report["lift"] = lift(tracks_2d, visible, out_tracks_3d, out_group, out_reproj, **kw)
    report["timings"]["lift"] = time.monotonic() - t0


def solve_trackfile(in_path, out_path, focal: float | None = None, zoom: bool = False,
                    distortion: str = "none", progress=None, refine: bool = True,
                    clip=None, max_rounds: int | None = None,
                    principal_point="auto") -> dict:
    """Solve the camera and lift all tracks of a track file; returns the solve report.

    ``focal`` in pixels when known (``focal_px_from_mm`` converts from millimetres).
    ``principal_point``: ``"auto"`` (solved when the footage pins it, else the image centre),
    ``"centre"`` or a known ``(x, y)`` in input px (OpenCV: centre ``((W-1)/2, (H-1)/2)``).
    The output is written atomically; nothing is written when the shot cannot be solved (raises
    :class:`SolveError`, whose message says why). ``in_path`` may equal ``out_path``.

    ``refine`` (default): feed the geometry back into the 2D tracks and iterate the solve
    (:mod:`engine.refine`); the output's ``tracks_2d`` / ``visible`` / ``confidence`` are then the
    refined tracks. ``clip``: the footage (default: ``metadata["source"]["path"]``); when it
    cannot be found the refinement uses geometry only and the report says so.
    """
    import time

    from ..parallel import blas_threads, loop_workers
    from ..refine import needs_paths
    from ..trackfile import TrackFileWriter, load_trackfile

    t0 = time.monotonic()
    data = load_trackfile(in_path)
    N, T = data.n_tracks, data.n_frames
    md = dict(data.metadata)
    with TrackFileWriter(out_path, N, T, md) as w:
        for name in ("query", "tracks_2d", "visible", "confidence", "colors"):
            src = getattr(data, name)
            if src is None:
                continue
            dst = w[name]
            for s in range(0, N, 16384):
                dst[s:s + 16384] = src[s:s + 16384]
        if data.depth is not None:
            dst = w["depth"]
            for t in range(T):
                dst[t] = data.depth[t]
        c2w, K, report, lift = solve_world(data.tracks_2d, data.visible, data.confidence,
                                           data.image_size, focal=focal, zoom=zoom,
                                           distortion=distortion,
                                           principal_point=principal_point, progress=progress)
        # with the refinement, moving tracks are fitted to the rigid groups by its geometry
        # pass, only those it does not fit as static points, and non-rigid paths are made at
        # its end for the tracks it leaves to the tracker (most become static points: a dense
        # clip's 70,000 moving tracks cost seconds)
        deferred = refine and not needs_paths(report["mode"])
        lift_into(report, lift, data.tracks_2d, data.visible, w["tracks_3d"], w["group"],
                  w["reproj_error"], paths=not deferred, assign=not deferred)
        if not refine:
            from ..lift.prune import dissolve_small_groups

            dissolve_small_groups(report["lift"], w["group"], lift, data.tracks_2d, data.visible,
                                  w["tracks_3d"], w["reproj_error"])
        else:
            c2w, K, report = _refine(data, w, c2w, K, report, lift, in_path, clip, focal, zoom,
                                     distortion, max_rounds, progress, principal_point)
        w["cam_to_world"][:] = c2w.astype(np.float32)
        w["K"][:] = K.astype(np.float32)
        report["timings"]["solve_trackfile_total"] = time.monotonic() - t0
        # what the timings ran on (threads per loop; BLAS threads as asked, see engine.parallel)
        report["threads"] = {"loops": loop_workers(), "blas": blas_threads()}
        w.metadata["solve"] = _jsonable(report)
        if distortion != "none":
            w.metadata["distortion"] = report.get("distortion")
        else:
            w.metadata.pop("distortion", None)
        tm = dict(w.metadata.get("timings", {}))
        tm["solve"] = round(time.monotonic() - t0, 3)
        w.metadata["timings"] = tm
    return w.metadata["solve"]


def _refine(data, w, c2w, K, report, lift, in_path, clip, focal, zoom, distortion, max_rounds,
            progress, principal_point="auto"):
    """Run :func:`engine.refine.refine_solution` with a re-solve on cleaned visibility
    (``lift``: the first solve's, :func:`solve_world`)."""
    from ..refine import MAX_ROUNDS, RESOLVE_RUNS, find_footage, refine_solution

    footage, note = find_footage(data.metadata, in_path, clip)
    if footage is None:
        report.setdefault("warnings", []).append(f"refine: {note}")

    # a re-solve is one run, not the first solve's restarts: it only has to beat the kept
    # solution to be kept, and restarts were most of its cost (zoom_0's refinement 56 -> 26 s).
    # Of the suite's 15 clips only zoom_1 keeps a re-solve, the same one as with restarts
    # (agreeing observations 25,660 -> 29,633 both ways)
    def solve_fn(visible):
        return solve_world(data.tracks_2d, visible, data.confidence, data.image_size,
                           focal=focal, zoom=zoom, distortion=distortion,
                           principal_point=principal_point, progress=progress,
                           restarts=RESOLVE_RUNS)

    c2w, K, rep = refine_solution(data, w, c2w, K, report, footage, solve_fn,
                                  MAX_ROUNDS if max_rounds is None else max_rounds,
                                  progress=progress, lift=lift)
    rep["refine"]["footage"] = note
    if footage is None:
        rep.setdefault("warnings", [])
        if f"refine: {note}" not in rep["warnings"]:
            rep["warnings"].append(f"refine: {note}")
    return c2w, K, rep


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float):
        return round(o, 6)
    return o


def predict_positions(solved: "TrackData", t: int, track_ids) -> tuple[np.ndarray, np.ndarray]:
    """Where solved tracks project at frame ``t``: the tracker's occlusion bridge.

    ``solved`` is a solved track file (``load_trackfile`` of the solve output, or any TrackData
    with ``tracks_3d``, ``cam_to_world``, ``K`` and optionally ``metadata["distortion"]``);
    ``t`` a frame index (0-based in the tracked range); ``track_ids`` an int array of tracks.

    Static points project their one 3D point through camera ``t``; points of rigid groups project
    their group's motion at ``t`` (defined also while they are hidden); non-rigid points use their
    smoothed path. Returns ``(x, y)`` float64 arrays in OpenCV pixels of the footage (with lens
    distortion applied), NaN where no 3D position is known or the point is behind the camera.
    """
    from .camera import project

    ids = np.asarray(track_ids, dtype=np.int64)
    order = np.argsort(ids)
    X = np.asarray(solved.tracks_3d[ids[order], t], dtype=np.float64)
    X_full = np.empty_like(X)
    X_full[order] = X
    d = (solved.metadata or {}).get("distortion") or None
    dist = (d.get("k1", 0.0), d.get("k2", 0.0), d.get("k3", 0.0)) if d else None
    ok = np.isfinite(X_full).all(1)
    uv = np.full((len(ids), 2), np.nan)
    if ok.any():
        uv[ok], _ = project(np.asarray(solved.cam_to_world[t], np.float64),
                            np.asarray(solved.K[t], np.float64), X_full[ok], dist)
    return uv[:, 0], uv[:, 1]
