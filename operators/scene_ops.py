"""Solve Camera, orientation tools (floor / origin / scale) and native-track export."""
from __future__ import annotations

import bpy


from . import common


def _selected_points(context) -> np.ndarray:
    """World positions (current frame) of the selected objects, active one first."""
    import numpy as np

    obs = list(context.selected_objects)
    act = context.active_object
    if act in obs:
        obs.remove(act)
        obs.insert(0, act)
    return np.array([ob.matrix_world.translation[:] for ob in obs], np.float64).reshape(-1, 3)


class WORLDTRACK_OT_solve_camera(bpy.types.Operator):
    """Create or update the solved camera from this clip's result (keyframes, lens, background)"""

    bl_idname = "worldtrack.solve_camera"
    bl_label = "Solve Camera"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return common.poll_result(cls, context)

    def execute(self, context):
        from . import build

        clip = common.active_clip(context)
        try:
            data = common.load_result(clip)
            ob = build.build_camera(context.scene, clip, data)
        except Exception as e:  # noqa: BLE001
            return common.report_error(self, e, clip)
        st = clip.worldtrack
        err = f", solve error {st.solve_error:.2f} px" if st.solve_error >= 0 else ""
        self.report({"INFO"}, f"Camera '{ob.name}' keyed over {data.n_frames} frames{err}")
        common.report_solve_warnings(self, clip)
        return {"FINISHED"}


class WORLDTRACK_OT_set_floor(bpy.types.Operator):
    """Make the plane through the selected points (3 or more) the floor; or the detected ground plane"""

    bl_idname = "worldtrack.set_floor"
    bl_label = "Set Floor"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not common.poll_result(cls, context):
            return False
        if not context.scene.worldtrack.use_detected_floor and len(context.selected_objects) < 3:
            cls.poll_message_set("Select 3 or more points (e.g. Worldtrack empties), "
                                 "or enable Detected Plane")
            return False
        return True

    def execute(self, context):
        from . import build

        clip = common.active_clip(context)
        scene = context.scene
        try:
            data = common.load_result(clip)
            s = build.world_scale(scene)
            if scene.worldtrack.use_detected_floor:
                pts = build.local_to_world(scene, build.detect_ground_plane(data, s))
            else:
                pts = _selected_points(context)
            up = build.local_to_world(scene, build.camera_centres(data, s)).mean(0)
            build.set_floor(scene, pts, up)
        except Exception as e:  # noqa: BLE001
            return common.report_error(self, e, clip)
        self.report({"INFO"}, f"Floor set from {len(pts)} points")
        return {"FINISHED"}


class WORLDTRACK_OT_set_origin(bpy.types.Operator):
    """Move the scene so the active object (e.g. a Worldtrack empty) is at the world origin"""

    bl_idname = "worldtrack.set_origin"
    bl_label = "Set Origin"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not common.poll_result(cls, context):
            return False
        if context.active_object is None:
            cls.poll_message_set("Select the point to become the origin")
            return False
        return True

    def execute(self, context):
        from . import build

        build.set_origin(context.scene, _selected_points(context)[0])
        return {"FINISHED"}


class WORLDTRACK_OT_set_scale(bpy.types.Operator):
    """Scale the scene so the two selected points are the given distance apart"""

    bl_idname = "worldtrack.set_scale"
    bl_label = "Set Scale"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not common.poll_result(cls, context):
            return False
        if len(context.selected_objects) != 2:
            cls.poll_message_set("Select exactly two points")
            return False
        return True

    def execute(self, context):
        from . import build

        p = _selected_points(context)
        try:
            build.set_scale(context.scene, p[0], p[1], context.scene.worldtrack.scale_distance)
        except ValueError as e:
            return common.report_error(self, e)
        return {"FINISHED"}


class WORLDTRACK_OT_export_tracks(bpy.types.Operator):
    """Copy the most reliable (or chosen) tracks into the clip as native Blender tracks"""

    bl_idname = "worldtrack.export_tracks"
    bl_label = "Export Native Tracks"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return common.poll_result(cls, context)

    def execute(self, context):
        from . import build, selection

        clip = common.active_clip(context)
        ws = context.scene.worldtrack
        try:
            data = common.load_result(clip)
            if ws.select_mode == "RELIABLE":
                ids = selection.most_reliable(data, ws.export_count, None if ws.group == -2 else ws.group,
                                              spread_px=selection.frame_spread_px(data, ws.export_count))
            else:
                ids = common.choose_tracks(context, clip, data)[:ws.export_count]
            names = build.export_native_tracks(clip, data, ids)
        except Exception as e:  # noqa: BLE001
            return common.report_error(self, e, clip)
        self.report({"INFO"}, f"Exported {len(names)} native tracks")
        return {"FINISHED"}


CLASSES = (WORLDTRACK_OT_solve_camera, WORLDTRACK_OT_set_floor, WORLDTRACK_OT_set_origin,
           WORLDTRACK_OT_set_scale, WORLDTRACK_OT_export_tracks)
