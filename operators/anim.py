"""Bulk keyframing that works with both Blender action APIs.

Blender 4.2 has legacy actions (``action.fcurves``); 4.4+ layered actions (layers / strips /
channel bags with slots) and 5.0 drops ``action.fcurves``. ``Action.fcurve_ensure_for_datablock``
(4.4+) creates the slot, layer, strip and channel bag as needed; on 4.2 we use ``fcurves.new``.
Keys are written with ``keyframe_points.add`` + ``foreach_set`` (no per-key Python calls).
"""
from __future__ import annotations

import bpy
import numpy as np

# Enum values of bpy.types.Keyframe.interpolation, as foreach_set wants them.
_INTERP = {"CONSTANT": 0, "LINEAR": 1, "BEZIER": 2}


def new_action(id_data: bpy.types.ID, name: str) -> bpy.types.Action:
    """Assign a fresh action to ``id_data`` (removing its previous action if nothing else uses it)."""
    ad = id_data.animation_data or id_data.animation_data_create()
    old = ad.action
    action = bpy.data.actions.new(name)
    ad.action = action
    if old is not None and old.users == 0:
        bpy.data.actions.remove(old)
    return action


def fcurve(action: bpy.types.Action, id_data: bpy.types.ID, data_path: str, index: int = 0,
           group: str = "") -> bpy.types.FCurve:
    """Find or create the F-curve ``data_path[index]`` of ``id_data`` in ``action``."""
    if hasattr(action, "fcurve_ensure_for_datablock"):  # 4.4+ layered actions
        return action.fcurve_ensure_for_datablock(id_data, data_path, index=index, group_name=group)
    fc = action.fcurves.find(data_path, index=index)
    if fc is None:
        fc = action.fcurves.new(data_path, index=index, action_group=group)
    return fc


def set_keys(action: bpy.types.Action, id_data: bpy.types.ID, data_path: str, index: int,
             frames: np.ndarray, values: np.ndarray, interpolation: str = "LINEAR",
             group: str = "") -> bpy.types.FCurve:
    """Replace the keys of one F-curve with ``values`` at scene ``frames`` (in bulk)."""
    fc = fcurve(action, id_data, data_path, index, group)
    kp = fc.keyframe_points
    if len(kp):
        kp.clear()
    n = len(frames)
    if n:
        kp.add(n)
        co = np.empty((n, 2), np.float32)
        co[:, 0] = frames
        co[:, 1] = values
        kp.foreach_set("co", co.ravel())
        kp.foreach_set("interpolation", np.full(n, _INTERP[interpolation], np.int32))
        fc.update()
    return fc


def key_vector(action: bpy.types.Action, id_data: bpy.types.ID, data_path: str, frames: np.ndarray,
               values: np.ndarray, interpolation: str = "LINEAR", group: str = "") -> None:
    """Key every component of a vector property (``values`` (n, k)) at ``frames``."""
    values = np.asarray(values)
    for i in range(values.shape[1]):
        set_keys(action, id_data, data_path, i, frames, values[:, i], interpolation, group)
