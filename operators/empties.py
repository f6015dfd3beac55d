"""Animated empties for chosen tracks (bulk keyframes, hidden frames marked)."""
from __future__ import annotations

from typing import Sequence

import bpy
import numpy as np

from . import anim
from .blscene import TRACK_PROP, clip_or_active, parent_to_root, scene_extent, ensure_collection, ensure_root, \
    frame_map, world_scale


def create_empties(scene: bpy.types.Scene, data, track_ids: Sequence[int],
                   collection_name: str = "Worldtrack Empties", clip: bpy.types.MovieClip | None = None,
                   display_size: float | None = None) -> bpy.types.Collection:
    """One animated empty per track (world positions keyed in bulk), in one collection.

    Frames with an unknown 3D position are not keyed (the empty holds); each empty has a
    ``visible`` custom property keyed 1/0 (constant interpolation) marking hidden frames.
    """
    clip = clip_or_active(scene, clip)
    fm = frame_map(data, clip)
    s = world_scale(scene)
    root = ensure_root(scene)
    coll = ensure_collection(scene, collection_name, ensure_collection(scene))
    size = display_size or 0.01 * scene_extent(data, s)
    frames = fm.scene_frames()
    ids = np.asarray(track_ids, np.int64)
    if len(ids) == 0:
        return coll
    X = np.asarray(data.tracks_3d[np.sort(ids)], np.float64) * s
    V = np.asarray(data.visible[np.sort(ids)], bool)
    order = {int(i): k for k, i in enumerate(np.sort(ids))}
    for tid in ids:
        k = order[int(tid)]
        name = f"WT_{int(tid):07d}"
        ob = coll.objects.get(name)
        if ob is None:
            ob = bpy.data.objects.new(name, None)
            coll.objects.link(ob)
        ob[TRACK_PROP] = int(tid)
        ob["visible"] = 1.0
        ob.empty_display_type = "SPHERE"
        ob.empty_display_size = size
        parent_to_root(ob, root)
        known = np.isfinite(X[k]).all(1)
        act = anim.new_action(ob, name)
        if known.any():
            anim.key_vector(act, ob, "location", frames[known], X[k][known])
            ob.location = X[k][np.argmax(known)]
        anim.set_keys(act, ob, '["visible"]', 0, frames, V[k].astype(np.float32), "CONSTANT")
    return coll
