"""Shared Blender-side helpers: frame mapping, unit scale, the Worldtrack origin and collections.

Frames: track-file frame index ``t`` is footage frame ``i = metadata["frame_range"][0] + t``
(the engine's footage numbering: 0-based index for a movie, the number in the file name for an
image sequence). Blender shows footage frame ``i`` at clip frame
``c = i - base + 1 - clip.frame_offset`` (``base`` = 0 for a movie, the number in the clip's file
name for a sequence; native markers use clip frames) and at scene frame
``s = c + clip.frame_start - 1``. Without a clip, ``s = t + 1``.

Space: everything Worldtrack creates is parented to one *origin* empty ("Worldtrack Origin").
Keyframes hold track-file world coordinates times ``1 / scene.unit_settings.scale_length`` (the
track file's unit is taken as the metre), in the origin's local space; orientation tools (floor,
origin, scale) only move/scale that origin, so they never rewrite keyframes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

ROOT_NAME = "Worldtrack Origin"
COLLECTION_NAME = "Worldtrack"
TRACK_PROP = "worldtrack_track"


@dataclass(frozen=True)
class FrameMap:
    """Track-file frame index t <-> Blender frames."""

    clip_frame0: int   # clip frame of t = 0 (markers)
    scene_frame0: int  # scene frame of t = 0 (keyframes)
    n_frames: int

    def scene_frames(self) -> np.ndarray:
        return np.arange(self.n_frames, dtype=np.float64) + self.scene_frame0

    def t_of_scene_frame(self, frame: float) -> int:
        return int(np.clip(round(frame - self.scene_frame0), 0, self.n_frames - 1))


def footage_base(clip: bpy.types.MovieClip) -> int:
    """Footage number shown at clip frame 1 when ``frame_offset`` is 0: 0 for a movie, the number
    in the file name of an image sequence's clip path (as Blender counts from it)."""
    if clip.source != "SEQUENCE":
        return 0
    stem = Path(bpy.path.basename(clip.filepath)).stem
    digits = stem[len(stem.rstrip("0123456789")):]
    return int(digits) if digits else 0


def frame_map(data, clip: bpy.types.MovieClip | None = None) -> FrameMap:
    first = int(data.metadata["frame_range"][0])
    if clip is None:
        return FrameMap(1, 1, data.n_frames)
    c0 = first - footage_base(clip) + 1 - int(clip.frame_offset)
    return FrameMap(c0, c0 + int(clip.frame_start) - 1, data.n_frames)


def world_scale(scene: bpy.types.Scene) -> float:
    """Blender units per track-file unit (track-file units are taken as metres)."""
    s = float(scene.unit_settings.scale_length)
    return 1.0 / s if s > 0 else 1.0


def clip_or_active(scene, clip):
    return clip if clip is not None else scene.active_clip


def ensure_collection(scene: bpy.types.Scene, name: str = COLLECTION_NAME,
                      parent: bpy.types.Collection | None = None) -> bpy.types.Collection:
    parent = parent or scene.collection
    coll = parent.children.get(name)
    if coll is None:
        coll = bpy.data.collections.get(name)
        if coll is None or coll.library is not None:
            coll = bpy.data.collections.new(name)
        if coll.name not in parent.children:
            parent.children.link(coll)
    return coll


def ensure_root(scene: bpy.types.Scene) -> bpy.types.Object:
    """The scene's Worldtrack origin empty (created at identity if missing)."""
    coll = ensure_collection(scene)
    for ob in coll.objects:
        if ob.get("worldtrack_root"):
            return ob
    root = bpy.data.objects.new(ROOT_NAME, None)
    root["worldtrack_root"] = True
    root.empty_display_type = "ARROWS"
    coll.objects.link(root)
    return root


def parent_to_root(ob: bpy.types.Object, root: bpy.types.Object) -> None:
    ob.parent = root
    ob.matrix_parent_inverse = Matrix.Identity(4)


def link_object(ob: bpy.types.Object, coll: bpy.types.Collection) -> None:
    if ob.name not in coll.objects:
        coll.objects.link(ob)


def to_matrix(m: np.ndarray) -> Matrix:
    return Matrix([list(map(float, r)) for r in m])


def euler_keys(mats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T,4,4) -> locations (T,3), continuous XYZ Euler angles (T,3) (no 360° flips)."""
    loc = mats[:, :3, 3].copy()
    rot = np.empty((len(mats), 3))
    prev = None
    for i, m in enumerate(mats):
        e = to_matrix(m[:3, :3]).to_euler("XYZ", prev) if prev is not None else \
            to_matrix(m[:3, :3]).to_euler("XYZ")
        rot[i] = e[:]
        prev = e
    return loc, rot


def scene_extent(data, scale: float) -> float:
    """A typical camera-to-scene distance in Blender units (for display sizes, clip_end)."""
    c = np.asarray(data.cam_to_world[:, :3, 3], np.float64)
    step = max(1, data.n_tracks // 2000)
    x = np.asarray(data.tracks_3d[::step, 0], np.float64)
    x = x[np.isfinite(x).all(1)]
    if len(x) == 0:
        return max(1.0, float(np.ptp(c, 0).max())) * scale
    return float(np.median(np.linalg.norm(x - c[0], axis=1))) * scale or 1.0


def default_cache_dir(clip: bpy.types.MovieClip | None = None) -> Path:
    """Where results and point caches go when no cache folder is set in the preferences:
    next to the .blend (``<blend dir>/worldtrack_cache``); for an unsaved file, the extension's
    user folder (``extension_path_user``), else the system temp folder."""
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//")) / "worldtrack_cache"
    from .. import preferences

    try:
        return Path(bpy.utils.extension_path_user(preferences.PACKAGE, path="cache", create=True))
    except (ValueError, AttributeError, KeyError):  # not installed as an extension (scripts, tests)
        import tempfile

        return Path(tempfile.gettempdir()) / "worldtrack_cache"
