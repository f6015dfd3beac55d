"""Track Clip (engine in a subprocess, modal progress, cancel), Cancel, Load Result, Detect Device."""
from __future__ import annotations

import sys
from pathlib import Path

import bpy
from bpy.props import StringProperty

from . import common, jobs
from .. import preferences


def clip_footage_path(clip: bpy.types.MovieClip) -> Path:
    """The clip's file: the movie, or the frame file an image sequence was opened from."""
    return Path(bpy.path.abspath(clip.filepath, library=clip.library))


def engine_input(clip: bpy.types.MovieClip) -> str:
    """What ``engine track`` reads: the movie, or a ``#`` pattern for an image sequence
    (``shot_0101.png`` -> ``shot_####.png``)."""
    path = clip_footage_path(clip)
    if clip.source != "SEQUENCE":
        return str(path)
    stem = path.stem
    digits = len(stem) - len(stem.rstrip("0123456789"))
    if not digits:
        return str(path.parent)
    return str(path.with_name(stem[:-digits] + "#" * digits + path.suffix))


#: Settings that change how the engine runs, not what it produces: left out of the cache key.
UNKEYED_SETTINGS = ("device", "memory_limit_mb", "notes")


def track_settings(context, clip: bpy.types.MovieClip) -> dict:
    """The engine settings for ``clip``: ``start``/``end`` in the engine's footage numbering
    (0-based index of a movie, file-name number of a sequence), inclusive; ``colorspace`` from
    the clip's colour space (:func:`jobs.engine_colorspace`; ``notes`` says when it was not
    recognised); ``memory_limit_mb`` from the add-on preference (GiB -> MiB); ``precision``
    (auto / fp32 / fp16) from the add-on preference -- keyed: float16 changes the result."""
    from .build import footage_base

    st = clip.worldtrack
    prefs = preferences.get(context)
    c0, c1 = (st.frame_start, st.frame_end) if st.use_frame_range else (1, clip.frame_duration)
    c1 = max(c0, min(c1, clip.frame_duration))
    off = clip.frame_offset + footage_base(clip)
    colorspace, note = jobs.engine_colorspace(clip.colorspace_settings.name)
    out = {"start": c0 - 1 + off, "end": c1 - 1 + off, "grid": st.grid, "max_size": st.max_size,
           "zoom": st.zoom, "distortion": st.distortion.lower(),
           "principal_point": st.principal_point.lower(), "colorspace": colorspace,
           "device": prefs.device.lower(), "precision": prefs.precision.lower(),
           "memory_limit_mb": int(round(float(prefs.memory_limit_gb) * 1024)),
           "notes": [note] if note else []}
    if st.use_known_focal:
        tc = clip.tracking.camera
        out["focal_mm"], out["sensor_width_mm"] = float(tc.focal_length), float(tc.sensor_width)
    return out


def cache_root(context, clip: bpy.types.MovieClip) -> Path:
    prefs = preferences.get(context)
    if prefs.cache_dir:
        return Path(bpy.path.abspath(prefs.cache_dir))
    from .build import default_cache_dir

    return default_cache_dir(clip)


def result_key(context, clip) -> tuple[str, dict]:
    from ..engine import __version__

    settings = track_settings(context, clip)
    keyed = {k: v for k, v in settings.items() if k not in UNKEYED_SETTINGS}
    h = jobs.footage_hash(clip_footage_path(clip), clip.source)
    return jobs.cache_key(h, keyed, __version__), settings


def apply_result(clip: bpy.types.MovieClip, path: Path, key: str = "") -> None:
    """Record a finished result on the clip (the scene itself is not touched)."""
    from ..engine.trackfile import load_trackfile

    data = load_trackfile(path)
    common.set_result(clip, path, data, key)


class WORLDTRACK_OT_track_clip(bpy.types.Operator):
    """Track every point of the active clip and solve the camera (runs in the background; Esc cancels)"""

    bl_idname = "worldtrack.track_clip"
    bl_label = "Track Clip"
    # The undo step is pushed when the modal run finishes (not on cancel), so the recorded result
    # survives later undos.
    bl_options = {"REGISTER", "UNDO"}

    _timer = None
    _clip_name = ""

    @classmethod
    def poll(cls, context):
        clip = common.active_clip(context)
        if clip is None:
            cls.poll_message_set("No active movie clip (open one in the Movie Clip Editor)")
            return False
        if clip.source not in {"MOVIE", "SEQUENCE"}:
            cls.poll_message_set("The clip must be a movie file or an image sequence")
            return False
        job = jobs.JOBS.get(clip.name)
        if job is not None and not job.finished:
            cls.poll_message_set("This clip is being tracked already")
            return False
        return True

    def _start(self, context):
        clip = common.active_clip(context)
        path = clip_footage_path(clip)
        if not path.exists():
            self.report({"ERROR"}, f"Footage not found: {path}")
            return None, clip
        key, settings = result_key(context, clip)
        root = cache_root(context, clip)
        cached = jobs.find_cached(root, key)
        if cached is not None:
            try:
                apply_result(clip, cached, key)
                self.report({"INFO"}, f"Found in cache: {cached}")
                common.report_solve_warnings(self, clip)
                return "cached", clip
            except Exception:  # noqa: BLE001 - unreadable cache entry: run again
                pass
        for note in settings["notes"]:
            self.report({"WARNING"}, note)
        steps = jobs.engine_steps(engine_input(clip), Path("{work}"), settings, sys.executable)
        job = jobs.EngineJob(steps, root, key, info={"clip": clip.name, "settings": settings,
                                                     "footage": str(path)},
                             notes=settings["notes"])
        jobs.JOBS[clip.name] = job.start()
        return job, clip

    def _finish(self, context, job, clip) -> set[str]:
        jobs.JOBS.pop(clip.name, None)
        if job.state == "done":
            try:
                apply_result(clip, job.result_path, job.key)
            except Exception as e:  # noqa: BLE001
                return common.report_error(self, e, clip)
            secs = job.finished_at - job.started_at
            self.report({"INFO"}, f"Tracked {clip.worldtrack.n_tracks} points over "
                                  f"{clip.worldtrack.n_frames} frames in {secs:.1f} s")
            common.report_solve_warnings(self, clip)
            return {"FINISHED"}
        if job.state == "cancelled":
            self.report({"WARNING"}, "Tracking cancelled; nothing was changed")
            return {"CANCELLED"}
        return common.report_error(self, RuntimeError(job.error or "the engine failed"), clip)

    def execute(self, context):
        # Blocking path (scripts, background mode): same job, waited for here.
        job, clip = self._start(context)
        if job is None:
            return {"CANCELLED"}
        if job == "cached":
            return {"FINISHED"}
        job.wait()
        return self._finish(context, job, clip)

    def invoke(self, context, event):
        if context.window is None:
            return self.execute(context)
        job, clip = self._start(context)
        if job is None:
            return {"CANCELLED"}
        if job == "cached":
            return {"FINISHED"}
        self._clip_name = clip.name
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 1000)
        return {"RUNNING_MODAL"}

    def _cleanup(self, context):
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _redraw(context)

    def modal(self, context, event):
        clip = bpy.data.movieclips.get(self._clip_name)
        job = jobs.JOBS.get(self._clip_name)
        if job is None or clip is None:
            self._cleanup(context)
            return {"CANCELLED"}
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            return {"RUNNING_MODAL"}  # consumed; the timer reports the cancel when it lands
        if event.type == "TIMER" or job.finished:
            if job.finished:
                self._cleanup(context)
                return self._finish(context, job, clip)
            context.window_manager.progress_update(int(job.fraction * 1000))
            if context.workspace is not None:
                context.workspace.status_text_set(job.status_text() + "  (Esc to cancel)")
            _redraw(context)
        return {"PASS_THROUGH"}


def _redraw(context):
    screen = getattr(context, "screen", None)
    if screen is None:
        return
    for area in screen.areas:
        if area.type in {"CLIP_EDITOR", "VIEW_3D"}:
            area.tag_redraw()


class WORLDTRACK_OT_cancel(bpy.types.Operator):
    """Stop tracking this clip; the scene and the cache stay as they were"""

    bl_idname = "worldtrack.cancel"
    bl_label = "Cancel Tracking"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        clip = common.active_clip(context)
        job = jobs.JOBS.get(clip.name) if clip is not None else None
        if job is None or job.finished:
            cls.poll_message_set("Nothing is being tracked for this clip")
            return False
        return True

    def execute(self, context):
        clip = common.active_clip(context)
        jobs.JOBS[clip.name].cancel()
        return {"FINISHED"}


class WORLDTRACK_OT_load_result(bpy.types.Operator):
    """Use an existing track file (.npz, e.g. a generator's ground truth) as this clip's result"""

    bl_idname = "worldtrack.load_result"
    bl_label = "Load Track File"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        if common.active_clip(context) is None:
            cls.poll_message_set("No active movie clip")
            return False
        return True

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        clip = common.active_clip(context)
        try:
            apply_result(clip, Path(bpy.path.abspath(self.filepath)))
        except Exception as e:  # noqa: BLE001 - TrackFileError carries a clear message
            return common.report_error(self, e, clip)
        return {"FINISHED"}


class WORLDTRACK_OT_detect_device(bpy.types.Operator):
    """Check which compute devices the engine can use (runs a short engine process)"""

    bl_idname = "worldtrack.detect_device"
    bl_label = "Detect Device"
    bl_options = {"REGISTER"}

    def execute(self, context):
        import json
        import subprocess

        code = ("import json; from engine.runtime import select_providers; "
                "p, m = select_providers('auto'); print('WT-DEVICE ' + json.dumps([p, m]))")
        try:
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env=jobs.subprocess_env(), timeout=120)
            line = next(ln for ln in r.stdout.splitlines() if ln.startswith("WT-DEVICE "))
            providers, message = json.loads(line[len("WT-DEVICE "):])
            gpu = "CUDAExecutionProvider" in providers
            preferences.DETECTED.update(message=f"{'CUDA GPU' if gpu else 'CPU'} ({message})")
        except Exception as e:  # noqa: BLE001
            preferences.DETECTED.update(message=f"CPU (device check failed: {e})")
        self.report({"INFO"}, preferences.DETECTED["message"])
        return {"FINISHED"}


CLASSES = (WORLDTRACK_OT_track_clip, WORLDTRACK_OT_cancel, WORLDTRACK_OT_load_result,
           WORLDTRACK_OT_detect_device)
