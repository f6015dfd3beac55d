"""Blender's own tracker and camera solver (libmv), driven headless through ``bpy``.

What an artist does in the Movie Clip Editor, scripted:

1. Camera solve: detect features (``clip.detect_features``) on the first frame and track them
   forwards, on the last frame and track them backwards (``clip.track_markers``), then
   ``clip.solve_camera`` with keyframe selection on; the focal length is either given (true
   focal, not refined) or unknown (initial guess 1.2·max(W, H), ``refine_intrinsics_focal_length``).
2. 2D point tracks for the benchmark queries — the matching rule: every query gets its own
   marker, placed at the query pixel on the query frame (``tracks.new`` + ``markers.insert_frame``)
   and tracked forwards and backwards with the same tracker settings. These markers are added
   after the solve so they do not change it. A query is visible on the frames where its marker
   exists and is not muted (libmv stops a track when the correlation drops below the minimum).
3. 3D: each query track is triangulated as a static point with libmv's cameras (the same rule
   as the OpenCV camera baseline).

Conversions: marker ``co`` is normalised with origin bottom-left and spans the pixel edges, so
OpenCV pixels are ``x = co.x W − 0.5``, ``y = (1 − co.y) H − 0.5``. Reconstructed cameras are
Blender camera axes (x right, y up, −z forward) camera-to-world: OpenCV = ``M · diag(1, −1, −1, 1)``;
their frames are clip frames (1-based: ``t = frame − frame_start``).

Headless recipe (bpy 5.0.1 and 4.2): take ``window_manager.windows[0]``, set its screen's first
area to ``CLIP_EDITOR``, assign the clip to that space and call ``bpy.ops.clip.*`` inside
``context.temp_override(window, area, region=<WINDOW region>, space_data)``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ._io import clip_fps, list_frames, write_result

NAME = "libmv"
#: Blender's defaults, except pattern and search sizes, which scale with the frame width below
#: 640 px (the defaults are meant for HD footage; see _configure)
TRACK_SETTINGS = {"default_pattern_size": 21, "default_search_size": 71,
                  "default_motion_model": "Loc", "default_correlation_min": 0.75,
                  "default_pattern_match": "KEYFRAME", "default_margin": 4}


class _Editor:
    """A Movie Clip Editor context for ``bpy.ops.clip`` in a headless session."""

    def __init__(self, clip):
        import bpy

        self.bpy = bpy
        self.win = bpy.context.window_manager.windows[0]
        self.area = self.win.screen.areas[0]
        self.area.type = "CLIP_EDITOR"
        self.space = self.area.spaces.active
        self.space.clip = clip
        self.region = next(r for r in self.area.regions if r.type == "WINDOW")
        self.clip = clip

    def op(self, name: str, **kw):
        with self.bpy.context.temp_override(window=self.win, area=self.area, region=self.region,
                                            space_data=self.space):
            return getattr(self.bpy.ops.clip, name)(**kw)

    def frame(self, f: int) -> None:
        """Go to clip frame ``f``. The operators read the editor's clip-user frame, which only a
        redraw would sync from the scene in a UI session, so set both."""
        self.bpy.context.scene.frame_set(f)
        self.space.clip_user.frame_current = f


def _load_clip(clip_dir: str | Path):
    import bpy

    files = list_frames(clip_dir)
    if files:
        clip = bpy.data.movieclips.load(str(files[0]))
    else:
        mp4 = sorted(Path(clip_dir).glob("*.mp4"))
        if not mp4:
            raise ValueError(f"{clip_dir}: no frames and no .mp4")
        clip = bpy.data.movieclips.load(str(mp4[0]))
    scene = bpy.context.scene
    scene.frame_start = clip.frame_start
    scene.frame_end = clip.frame_start + clip.frame_duration - 1
    return clip


def _configure(clip, focal: float | None) -> dict:
    import json
    import os

    s = clip.tracking.settings
    w, h = clip.size
    # WT_LIBMV='{"default_search_size": 121}' overrides settings for experiments.
    pattern = 21 if w >= 640 else (15 if w >= 256 else 11)
    settings = {**TRACK_SETTINGS, "default_pattern_size": pattern,
                "default_search_size": max(71 if w >= 640 else 4 * pattern + 1, int(round(w / 10)) | 1),
                **json.loads(os.environ.get("WT_LIBMV", "{}"))}
    for k, v in settings.items():
        setattr(s, k, v)
    s.use_keyframe_selection = True
    s.use_tripod_solver = False
    s.refine_intrinsics_focal_length = focal is None
    cam = clip.tracking.camera
    cam.distortion_model = "POLYNOMIAL"
    cam.k1 = cam.k2 = cam.k3 = 0.0
    cam.sensor_width = 36.0
    cam.pixel_aspect = 1.0
    cam.focal_length_pixels = float(focal) if focal else 1.2 * max(w, h)
    cam.principal_point_pixels = (w / 2.0, h / 2.0)
    return settings


def _select(track, on: bool) -> None:
    """Blender tracks count as selected if any of anchor/pattern/search is; set all three."""
    track.select = track.select_pattern = track.select_search = on


def _detect_and_track(ed: _Editor, frame: int, backwards: bool, min_distance: int) -> None:
    ed.frame(frame)
    old = set(tr.name for tr in ed.clip.tracking.tracks)
    ed.op("detect_features", placement="FRAME", margin=16, threshold=0.005, min_distance=min_distance)
    for tr in ed.clip.tracking.tracks:  # track only the features just detected
        _select(tr, tr.name not in old)
    ed.op("track_markers", backwards=backwards, sequence=True)


def _solve(ed: _Editor, clean_error_px: float = 3.0) -> dict:
    clip = ed.clip
    t0 = time.perf_counter()
    notes: list[str] = []
    res = _solve_once(ed, notes)
    rec = clip.tracking.reconstruction
    if rec.is_valid and rec.average_error > 1.0:
        # The artist's loop: delete tracks whose reprojection error exceeds a few pixels
        # ("Clean Tracks") and solve again.
        before = len(clip.tracking.tracks)
        ed.frame(clip.frame_start)
        for tr in clip.tracking.tracks:
            _select(tr, True)
        ed.op("clean_tracks", frames=0, error=clean_error_px, action="DELETE_TRACK")
        notes.append(f"solve error {rec.average_error:.2f} px: cleaned tracks with error > "
                     f"{clean_error_px} px ({before} -> {len(clip.tracking.tracks)}) and re-solved")
        res = _solve_once(ed, notes)
    return _read_reconstruction(ed, res, notes, t0)


def _solve_once(ed: _Editor, notes: list[str]) -> set:
    clip = ed.clip
    ed.frame(clip.frame_start)
    for tr in clip.tracking.tracks:
        _select(tr, True)
    try:
        res = ed.op("solve_camera")
    except RuntimeError as e:
        # Automatic keyframe selection finds no good pair on short/low-parallax shots; do what an
        # artist does next: pick the keyframes by hand (first and last frame) and solve again.
        notes.append(f"keyframe selection failed ({str(e).strip()[:120]}); retried with keyframes "
                     "first/last frame")
        clip.tracking.settings.use_keyframe_selection = False
        obj = clip.tracking.objects.active
        obj.keyframe_a = clip.frame_start
        obj.keyframe_b = clip.frame_start + clip.frame_duration - 1
        try:
            res = ed.op("solve_camera")
        except RuntimeError as e2:
            notes.append(f"solve failed: {str(e2).strip()[:160]}")
            res = set()
    return res


def _read_reconstruction(ed: _Editor, res: set, notes: list[str], t0: float) -> dict:
    clip = ed.clip
    rec = clip.tracking.reconstruction
    w, h = clip.size
    t = clip.frame_duration
    c2w = np.tile(np.eye(4), (t, 1, 1))
    solved = np.zeros(t, bool)
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    if rec.is_valid:
        for cam in rec.cameras:
            i = cam.frame - clip.frame_start
            if 0 <= i < t:
                c2w[i] = np.array(cam.matrix) @ flip
                solved[i] = True
    reg = np.nonzero(solved)[0]
    for i in np.nonzero(~solved)[0]:
        if len(reg):
            c2w[i] = c2w[reg[np.argmin(np.abs(reg - i))]]
    tc = clip.tracking.camera
    f = float(tc.focal_length_pixels)
    px, py = tc.principal_point_pixels
    k = np.array([[f, 0, px - 0.5], [0, f, h - py - 0.5], [0, 0, 1]])
    return {"cam_to_world": c2w, "K": k, "solved": solved, "valid": bool(rec.is_valid),
            "reproj_error": float(rec.average_error) if rec.is_valid else float("nan"),
            "result": sorted(res), "notes": notes, "n_tracks": len(clip.tracking.tracks),
            "n_bundles": sum(1 for tr in clip.tracking.tracks if tr.has_bundle),
            "solve_s": time.perf_counter() - t0}


def _track_queries(ed: _Editor, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clip = ed.clip
    tracks = clip.tracking.tracks
    if len(tracks):  # the solve's features go; the collection has no remove()
        for tr in tracks:
            _select(tr, True)
        ed.op("delete_track", confirm=False)
    w, h = clip.size
    t = clip.frame_duration
    n = len(query)
    fs = clip.frame_start
    qf = np.clip(np.round(query[:, 0]).astype(int), 0, t - 1)
    made = []
    for i in range(n):
        tr = tracks.new(name=f"q{i}", frame=int(qf[i]) + fs)
        m = tr.markers.find_frame(int(qf[i]) + fs)
        m.co = ((query[i, 1] + 0.5) / w, 1.0 - (query[i, 2] + 0.5) / h)
        made.append(tr)
    for f in sorted(set(qf.tolist())):
        group = set(np.nonzero(qf == f)[0].tolist())
        for backwards in (False, True):
            # select by hand: clip.select_all skips tracks without a marker on the current frame,
            # which would let earlier groups be re-tracked (overwriting their query markers)
            for i, tr in enumerate(made):
                _select(tr, i in group)
            ed.frame(int(f) + fs)
            ed.op("track_markers", backwards=backwards, sequence=True)
    xy = np.full((n, t, 2), np.nan, np.float32)
    vis = np.zeros((n, t), bool)
    for i, tr in enumerate(made):
        for m in tr.markers:
            j = m.frame - fs
            if 0 <= j < t and not m.mute:
                xy[i, j] = (m.co[0] * w - 0.5, (1.0 - m.co[1]) * h - 0.5)
                vis[i, j] = True
    return xy, vis


def run(clip_dir: str | Path, query: np.ndarray, out: str | Path, focal: float | None = None,
        solve: bool = True) -> Path:
    """Solve the camera (focal given or refined) and track the queries with Blender's tracker.

    ``solve=False`` only tracks the queries (2D-only footage): no features, no camera.
    """
    from .opencv_camera import lift_static

    t0 = time.perf_counter()
    clip = _load_clip(clip_dir)
    settings = _configure(clip, focal)
    ed = _Editor(clip)
    w, h = clip.size
    t = clip.frame_duration
    if solve:
        md = max(8, int(max(w, h) / 40))
        _detect_and_track(ed, clip.frame_start, False, md)
        _detect_and_track(ed, clip.frame_start + t - 1, True, md)
        t_track = time.perf_counter() - t0
        sol = _solve(ed)
    else:
        t_track = 0.0
        k = np.array([[clip.tracking.camera.focal_length_pixels, 0, (w - 1) / 2],
                      [0, clip.tracking.camera.focal_length_pixels, (h - 1) / 2], [0, 0, 1]])
        sol = {"cam_to_world": np.tile(np.eye(4), (t, 1, 1)), "K": k, "solved": np.zeros(t, bool),
               "valid": False, "reproj_error": float("nan"), "notes": ["no solve requested"],
               "n_tracks": 0, "n_bundles": 0, "solve_s": 0.0}
    t1 = time.perf_counter()
    xy, vis = _track_queries(ed, query)
    t_query = time.perf_counter() - t1
    pts3 = lift_static(xy, vis, sol["cam_to_world"], sol["K"], sol["solved"]) if sol["valid"] else None
    solve = {"success": bool(sol["valid"] and sol["solved"].mean() >= 0.9),
             "solved_frames": np.nonzero(sol["solved"])[0].tolist(),
             "reproj_error": sol["reproj_error"], "focal_given": focal is not None,
             "n_tracks": sol["n_tracks"], "n_bundles": sol["n_bundles"], "notes": sol["notes"]}
    return write_result(out, query=query, tracks_2d=xy, visible=vis, image_size=(w, h),
                        fps=clip_fps(clip_dir), method=NAME,
                        settings={"focal_given": focal, **settings, "keyframe_selection": True},
                        tracks_3d=pts3, cam_to_world=sol["cam_to_world"].astype(np.float32),
                        K=np.tile(sol["K"].astype(np.float32), (t, 1, 1)), solve=solve,
                        timings={"features": t_track, "solve": sol["solve_s"], "queries": t_query})
