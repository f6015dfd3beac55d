"""Attach to Surface: an empty following a region's robust rigid motion; objects parented to it."""
from __future__ import annotations

from typing import Iterable, Sequence

import bpy
import numpy as np

from . import anim, rigid
from .blscene import clip_or_active, euler_keys, to_matrix, parent_to_root, scene_extent, ensure_collection, \
    ensure_root, frame_map, world_scale


def attach_to_surface(scene: bpy.types.Scene, data, track_ids: Sequence[int],
                      objects: Iterable[bpy.types.Object] = (), ref_frame: int | None = None,
                      clip: bpy.types.MovieClip | None = None,
                      name: str = "Worldtrack Surface") -> bpy.types.Object:
    """Animated empty following the rigid motion of a surface region; parents ``objects`` to it.

    ``track_ids``: the region's tracks; ``ref_frame``: track-file frame where the empty sits at the
    region's centre with the origin's orientation (default: the scene's current frame). Per frame,
    a robust Kabsch fit of the region's visible 3D tracks to their reference positions gives the
    motion. Objects keep their current world transform.
    """
    clip = clip_or_active(scene, clip)
    fm = frame_map(data, clip)
    s = world_scale(scene)
    ids = np.sort(np.asarray(track_ids, np.int64))
    if len(ids) < 3:
        raise ValueError(f"need at least 3 tracks on the surface, got {len(ids)}")
    t_ref = fm.t_of_scene_frame(scene.frame_current) if ref_frame is None else int(ref_frame)
    X = np.asarray(data.tracks_3d[ids], np.float64) * s
    V = np.asarray(data.visible[ids], bool)
    ref = X[:, t_ref]
    ok_ref = np.isfinite(ref).all(1)
    if ok_ref.sum() < 3:
        raise ValueError("fewer than 3 of the region's tracks have a 3D position at the reference frame")
    A, fitted = rigid.region_motion(X, V, t_ref)
    if not fitted.any():
        raise ValueError("the region's tracks are never visible together (no frame could be fitted)")
    centre = np.median(ref[ok_ref], axis=0)
    C = np.eye(4)
    C[:3, 3] = centre
    mats = A @ C
    root = ensure_root(scene)
    coll = ensure_collection(scene)
    ob = bpy.data.objects.new(name, None)
    coll.objects.link(ob)
    ob.empty_display_type = "CUBE"
    ob.empty_display_size = 0.05 * scene_extent(data, s)
    ob.rotation_mode = "XYZ"
    parent_to_root(ob, root)
    ob["worldtrack_tracks"] = len(ids)
    frames = fm.scene_frames()
    loc, rot = euler_keys(mats)
    act = anim.new_action(ob, name)
    anim.key_vector(act, ob, "location", frames, loc)
    anim.key_vector(act, ob, "rotation_euler", frames, rot)
    ob["fitted"] = 1.0  # 1 where the frame had enough visible tracks for its own fit
    anim.set_keys(act, ob, '["fitted"]', 0, frames, fitted.astype(np.float32), "CONSTANT")

    for vl in scene.view_layers:  # objects just moved by a script have stale matrix_world
        vl.update()
    t_cur = fm.t_of_scene_frame(scene.frame_current)
    empty_world = root.matrix_world @ to_matrix(mats[t_cur])
    for child in objects:
        if child == ob or child == root:
            continue
        mw = child.matrix_world.copy()
        child.parent = ob
        child.matrix_parent_inverse = empty_world.inverted()
        child.matrix_basis = mw
    return ob
