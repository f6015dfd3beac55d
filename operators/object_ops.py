"""Create Empties, Create Point Cache Mesh, Attach to Surface, Pick 2D Cursor."""
from __future__ import annotations

from pathlib import Path

import bpy

from . import common


class WORLDTRACK_OT_create_empties(bpy.types.Operator):
    """Animated empties (world space) for the chosen tracks, in a 'Worldtrack Empties' collection"""

    bl_idname = "worldtrack.create_empties"
    bl_label = "Create Empties"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return common.poll_result(cls, context)

    def execute(self, context):
        from . import build

        clip = common.active_clip(context)
        notes: list[str] = []
        try:
            data = common.load_result(clip)
            ids = common.choose_tracks(context, clip, data, notes)
            if len(ids) == 0:
                raise ValueError(common.no_tracks_message(context))
            coll = build.create_empties(context.scene, data, ids, clip=clip)
        except Exception as e:  # noqa: BLE001
            return common.report_error(self, e, clip)
        common.report_notes(self, notes)
        self.report({"INFO"}, f"{len(ids)} empties in collection '{coll.name}'")
        return {"FINISHED"}


class WORLDTRACK_OT_create_point_cache(bpy.types.Operator):
    """One mesh with a vertex per track, animated by a Mesh Cache modifier (.pc2 next to the .blend)"""

    bl_idname = "worldtrack.create_point_cache"
    bl_label = "Create Point Cache Mesh"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return common.poll_result(cls, context)

    def execute(self, context):
        from . import build, track

        clip = common.active_clip(context)
        notes: list[str] = []
        try:
            data = common.load_result(clip)
            ids = None if context.scene.worldtrack.point_cache_all else \
                common.choose_tracks(context, clip, data, notes)
            if ids is not None and len(ids) == 0:
                raise ValueError(common.no_tracks_message(context))
            root = track.cache_root(context, clip)
            safe = bpy.path.clean_name(clip.name)
            path = Path(root) / f"{safe}_points.pc2"
            ob = build.create_point_cache_mesh(context.scene, data, ids, path, clip=clip)
        except Exception as e:  # noqa: BLE001
            return common.report_error(self, e, clip)
        common.report_notes(self, notes)
        t = ob["worldtrack_timings"]
        self.report({"INFO"}, f"{len(ob.data.vertices)} points: cache {t['write_pc2_s']:.1f} s, "
                              f"mesh {t['mesh_s']:.1f} s")
        return {"FINISHED"}


class WORLDTRACK_OT_attach_to_surface(bpy.types.Operator):
    """Glue the selected objects to the surface at the chosen tracks (2D cursor, selected tracks or drawn region)"""

    bl_idname = "worldtrack.attach_to_surface"
    bl_label = "Attach to Surface"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if not common.poll_result(cls, context):
            return False
        if context.scene.worldtrack.select_mode == "RELIABLE":
            cls.poll_message_set("Pick the surface: set Tracks to 'At 2D Cursor', 'Near Selected Tracks' "
                                 "or 'Inside Drawn Region'")
            return False
        return True

    def execute(self, context):
        from . import build

        clip = common.active_clip(context)
        notes: list[str] = []
        try:
            data = common.load_result(clip)
            ids = common.choose_tracks(context, clip, data, notes)
            if len(ids) == 0:
                raise ValueError(common.no_tracks_message(context))
            objs = [o for o in context.selected_objects if "worldtrack_root" not in o]
            ob = build.attach_to_surface(context.scene, data, ids, objs, clip=clip)
        except Exception as e:  # noqa: BLE001
            return common.report_error(self, e, clip)
        common.report_notes(self, notes)
        self.report({"INFO"}, f"'{ob.name}' follows {len(ids)} tracks; {len(objs)} objects attached")
        return {"FINISHED"}


class WORLDTRACK_OT_pick_cursor(bpy.types.Operator):
    """Use the Clip Editor's 2D cursor as the region centre"""

    bl_idname = "worldtrack.pick_cursor"
    bl_label = "Use 2D Cursor"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        sp = context.space_data
        if sp is None or sp.type != "CLIP_EDITOR" or sp.clip is None:
            cls.poll_message_set("Only in the Movie Clip Editor with a clip")
            return False
        return True

    def execute(self, context):
        sp = context.space_data
        w, h = sp.clip.size
        cx, cy = sp.cursor_location
        # The Clip Editor's cursor is in frame pixels from the bottom-left corner.
        context.scene.worldtrack.cursor = (cx / max(1, w), cy / max(1, h))
        context.scene.worldtrack.select_mode = "CURSOR"
        return {"FINISHED"}


CLASSES = (WORLDTRACK_OT_create_empties, WORLDTRACK_OT_create_point_cache,
           WORLDTRACK_OT_attach_to_surface, WORLDTRACK_OT_pick_cursor)
