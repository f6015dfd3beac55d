"""Helpers shared by the operators: the active clip, its result, track selection, poll messages."""
from __future__ import annotations

from pathlib import Path

import bpy



def active_clip(context) -> bpy.types.MovieClip | None:
    space = getattr(context, "space_data", None)
    if space is not None and space.type == "CLIP_EDITOR" and space.clip is not None:
        return space.clip
    scene = getattr(context, "scene", None)
    return scene.active_clip if scene is not None else None


def result_file(clip: bpy.types.MovieClip | None) -> Path | None:
    """The clip's track file if it has one on disk."""
    if clip is None or not clip.worldtrack.result_path:
        return None
    p = Path(bpy.path.abspath(clip.worldtrack.result_path))
    return p if p.is_file() else None


def load_result(clip: bpy.types.MovieClip):
    """Load the clip's track file (memory-mapped). Raises TrackFileError with a clear message."""
    from ..engine.trackfile import TrackFileError, load_trackfile

    p = result_file(clip)
    if p is None:
        raise TrackFileError(f"clip '{clip.name}' has no Worldtrack result; run Track Clip first")
    return load_trackfile(p)


def poll_result(cls, context) -> bool:
    """Poll for operators that need a clip with a result (sets the greyed-out reason)."""
    clip = active_clip(context)
    if clip is None:
        cls.poll_message_set("No active movie clip (open one in the Movie Clip Editor)")
        return False
    if result_file(clip) is None:
        cls.poll_message_set("This clip has no Worldtrack result yet: run Track Clip first")
        return False
    return True


def set_result(clip: bpy.types.MovieClip, path: Path, data, key: str = "") -> None:
    """Record ``path`` as the clip's result, with a summary from the track file."""
    from . import selection

    st = clip.worldtrack
    try:
        st.result_path = bpy.path.relpath(str(path)) if bpy.data.filepath else str(path)
    except ValueError:  # different drive on Windows
        st.result_path = str(path)
    st.cache_key = key
    st.n_frames, st.n_tracks = data.n_frames, data.n_tracks
    solve = data.metadata.get("solve") or {}
    keys = ("reproj_rms_px", "reproj_error_px", "mean_reproj_error_px", "rms_px", "rms")
    err = next((solve[k] for k in keys if k in solve), None)
    st.solve_error = float(err) if isinstance(err, (int, float)) else -1.0
    st.solve_warnings = "\n".join(str(w) for w in solve.get("warnings") or [])
    st.groups = "\n".join(selection.group_lines(data))
    timings = data.metadata.get("timings") or {}
    total = timings.get("total")
    st.time_s = float(total) if isinstance(total, (int, float)) else \
        float(sum(v for v in timings.values() if isinstance(v, (int, float))))
    st.ground_truth = bool(data.metadata.get("ground_truth", False))
    st.last_error = ""


def report_solve_warnings(op, clip) -> None:
    """Pass the solve's warnings (e.g. a weakly constrained focal length) on to the user."""
    for w in clip.worldtrack.solve_warnings.splitlines():
        op.report({"WARNING"}, f"Solve: {w}")


def current_t(scene, clip, data) -> int:
    from .build import frame_map

    return frame_map(data, clip).t_of_scene_frame(scene.frame_current)


def choose_tracks(context, clip, data, notes: list[str] | None = None) -> np.ndarray:
    """Track indices chosen by ``scene.worldtrack`` (mode, count, radius, region, group), at the
    scene's current frame. Warnings worth telling the artist (e.g. a mask parented to tracks) are
    appended to ``notes``. Raises ``regions.RegionError`` when the region mode finds nothing drawn."""
    import numpy as np

    from . import selection

    ws = context.scene.worldtrack
    group = None if ws.group == -2 else ws.group
    from .camera_math import marker_to_pixels

    t = current_t(context.scene, clip, data)
    W, H = data.image_size
    if ws.select_mode == "RELIABLE":
        return selection.most_reliable(data, ws.count, group,
                                       spread_px=selection.frame_spread_px(data, ws.count))
    if ws.select_mode == "CURSOR":
        cx, cy = marker_to_pixels(ws.cursor[:2], W, H)
        return selection.in_circle(data, t, (cx, cy), ws.radius, group, ws.count)
    if ws.select_mode == "REGION":
        from . import regions

        region = regions.read_region(context, clip, (W, H), ws.region_source, ws.region_mask)
        if notes is not None:
            notes.extend(region.warnings)
        return selection.in_area(data, t, region.contains, group, ws.count)
    # SELECTED: around the selected native tracks' markers at this clip frame.
    from .build import frame_map

    cf = frame_map(data, clip).clip_frame0 + t
    ids = []
    for tr in clip.tracking.tracks:
        if not tr.select:
            continue
        m = tr.markers.find_frame(cf)
        if m is None or m.mute:
            continue
        cx, cy = marker_to_pixels(m.co[:2], W, H)
        ids.append(selection.in_circle(data, t, (cx, cy), ws.radius, group, ws.count))
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)


def no_tracks_message(context) -> str:
    """Why a choice came out empty, in the artist's terms."""
    mode = context.scene.worldtrack.select_mode
    if mode == "REGION":
        return "No tracks inside the drawn region at this frame (draw it over tracked footage, " \
               "check the Group, or try another frame)"
    return "No tracks match (try another mode, a larger radius or another frame)"


def report_notes(op, notes: list[str]) -> None:
    for n in notes:
        op.report({"WARNING"}, n)


def report_error(op, exc: BaseException, clip=None) -> set[str]:
    msg = str(exc) or type(exc).__name__
    if clip is not None:
        clip.worldtrack.last_error = msg
    op.report({"ERROR"}, msg)
    return {"CANCELLED"}
