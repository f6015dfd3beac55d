"""Worldtrack panels: a "Worldtrack" tab in the Movie Clip Editor sidebar and a compact one in the
3D Viewport sidebar. Draw code only lays out properties and buttons (no computation); buttons are
greyed out by their operators' poll, with the reason as tooltip."""
from __future__ import annotations

import textwrap

import bpy

from ..operators import jobs

_HAS_PROGRESS = "progress" in bpy.types.UILayout.bl_rna.functions  # UILayout.progress: 4.0+


def _clip(context):
    sp = context.space_data
    if sp is not None and sp.type == "CLIP_EDITOR" and sp.clip is not None:
        return sp.clip
    return context.scene.active_clip


def draw_status(layout, clip) -> None:
    """none / running with progress / done with a summary / failed with the reason."""
    box = layout.box()
    job = jobs.JOBS.get(clip.name)
    st = clip.worldtrack
    if job is not None and not job.finished:
        if _HAS_PROGRESS:
            box.progress(factor=job.fraction, type="BAR", text=job.status_text().removeprefix("Worldtrack: "))
        else:
            box.label(text=job.status_text(), icon="TIME")
        box.operator("worldtrack.cancel", icon="CANCEL")
        return
    if not st.result_path:
        box.label(text="Not tracked yet", icon="INFO")
    else:
        col = box.column(align=True)
        col.label(text=("Ground truth: " if st.ground_truth else "Done: ")
                  + f"{st.n_tracks} tracks x {st.n_frames} frames", icon="CHECKMARK")
        if st.solve_error >= 0:
            col.label(text=f"Solve error {st.solve_error:.2f} px")
        for line in st.groups.splitlines():
            col.label(text=line, icon="OBJECT_DATA")
        for w in st.solve_warnings.splitlines():
            for i, line in enumerate(textwrap.wrap(w, 42)):
                col.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        if st.time_s > 0:
            col.label(text=f"Time {st.time_s:.1f} s")
    if st.last_error:
        box.label(text=st.last_error, icon="ERROR")


def draw_settings(layout, context, clip) -> None:
    from .. import preferences

    st = clip.worldtrack
    col = layout.column(align=True)
    col.prop(st, "use_frame_range")
    sub = col.row(align=True)
    sub.active = st.use_frame_range
    sub.prop(st, "frame_start")
    sub.prop(st, "frame_end")
    layout.prop(st, "grid")
    layout.prop(st, "max_size")
    col = layout.column(align=True)
    col.prop(st, "zoom")
    col.prop(st, "distortion")
    col.prop(st, "principal_point")
    col.prop(st, "use_known_focal")
    prefs = preferences.get(context)
    row = layout.row()
    row.label(text=f"Device: {prefs.device.title()} "
                   f"({preferences.DETECTED.get('message', 'not checked')})", icon="SETTINGS")
    row.operator("worldtrack.detect_device", text="", icon="FILE_REFRESH")


def draw_selection(layout, scene) -> None:
    ws = scene.worldtrack
    layout.prop(ws, "select_mode", text="")
    col = layout.column(align=True)
    col.prop(ws, "count")
    if ws.select_mode in ("CURSOR", "SELECTED"):
        col.prop(ws, "radius")
    if ws.select_mode == "CURSOR":
        col.prop(ws, "cursor", text="")
    if ws.select_mode == "REGION":
        col.prop(ws, "region_source", text="")
        if ws.region_source != "ANNOTATION":
            col.prop(ws, "region_mask")
    col.prop(ws, "group")


def draw_scene_tools(layout, scene) -> None:
    ws = scene.worldtrack
    layout.operator("worldtrack.solve_camera", icon="CAMERA_DATA")
    col = layout.column(align=True)
    row = col.row(align=True)
    row.operator("worldtrack.set_floor", icon="MESH_PLANE")
    row.prop(ws, "use_detected_floor", text="", icon="AUTO")
    col.operator("worldtrack.set_origin", icon="OBJECT_ORIGIN")
    row = col.row(align=True)
    row.operator("worldtrack.set_scale", icon="DRIVER_DISTANCE")
    row.prop(ws, "scale_distance", text="")


def draw_object_tools(layout, scene) -> None:
    ws = scene.worldtrack
    layout.operator("worldtrack.create_empties", icon="EMPTY_AXIS")
    row = layout.row(align=True)
    row.operator("worldtrack.create_point_cache", icon="OUTLINER_DATA_POINTCLOUD")
    row.prop(ws, "point_cache_all", text="", icon="WORLD")
    layout.operator("worldtrack.attach_to_surface", icon="PINNED")


class _ClipPanel:
    bl_space_type = "CLIP_EDITOR"
    bl_region_type = "UI"
    bl_category = "Worldtrack"

    @classmethod
    def poll(cls, context):
        return _clip(context) is not None


class WORLDTRACK_PT_clip_track(_ClipPanel, bpy.types.Panel):
    bl_label = "Worldtrack"

    def draw(self, context):
        layout = self.layout
        clip = _clip(context)
        draw_settings(layout, context, clip)
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("worldtrack.track_clip", icon="TRACKING")
        layout.operator("worldtrack.load_result", icon="FILE_FOLDER")
        draw_status(layout, clip)


class WORLDTRACK_PT_clip_scene(_ClipPanel, bpy.types.Panel):
    bl_label = "Camera & Scene"
    bl_parent_id = "WORLDTRACK_PT_clip_track"

    def draw(self, context):
        draw_scene_tools(self.layout, context.scene)
        ws = context.scene.worldtrack
        row = self.layout.row(align=True)
        row.operator("worldtrack.export_tracks", icon="TRACKER")
        row.prop(ws, "export_count", text="")


class WORLDTRACK_PT_clip_objects(_ClipPanel, bpy.types.Panel):
    bl_label = "Empties, Points, Surfaces"
    bl_parent_id = "WORLDTRACK_PT_clip_track"

    def draw(self, context):
        layout = self.layout
        draw_selection(layout, context.scene)
        layout.operator("worldtrack.pick_cursor", icon="PIVOT_CURSOR")
        draw_object_tools(layout, context.scene)


class WORLDTRACK_PT_view3d(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Worldtrack"
    bl_label = "Worldtrack"

    def draw(self, context):
        layout = self.layout
        clip = context.scene.active_clip
        if clip is None:
            layout.label(text="No active clip (Scene > Active Clip)", icon="INFO")
            return
        layout.label(text=clip.name, icon="SEQUENCE")
        draw_status(layout, clip)
        draw_scene_tools(layout, context.scene)
        draw_selection(layout, context.scene)
        draw_object_tools(layout, context.scene)


CLASSES = (WORLDTRACK_PT_clip_track, WORLDTRACK_PT_clip_scene, WORLDTRACK_PT_clip_objects,
           WORLDTRACK_PT_view3d)
