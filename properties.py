"""Every Worldtrack bpy property, in one place.

- ``MovieClip.worldtrack`` (:class:`WorldtrackClipSettings`): tracking settings of that clip and
  the state of its result (saved in the .blend, so the result is found again after re-opening).
- ``Scene.worldtrack`` (:class:`WorldtrackSceneSettings`): choices for the object builders.
Running jobs are not properties: see ``operators.jobs.JOBS``.
"""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, FloatVectorProperty, IntProperty,
                       PointerProperty, StringProperty)


# Blender 4.5+ wants file paths that may be "//"-relative flagged as such; 4.2 lacks the flag.
_REL = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


class WorldtrackClipSettings(bpy.types.PropertyGroup):
    use_frame_range: BoolProperty(name="Custom Range", default=False,
                                  description="Track only a range of the clip's frames")
    frame_start: IntProperty(name="Start", default=1, min=1, description="First clip frame to track")
    frame_end: IntProperty(name="End", default=250, min=1, description="Last clip frame to track")
    grid: IntProperty(name="Density", default=8, min=1, max=256, subtype="PIXEL",
                      description="Spacing between tracked points on the first frame, in footage "
                                  "pixels (smaller = denser)")
    max_size: IntProperty(name="Working Resolution", default=640, min=64, max=8192, subtype="PIXEL",
                          description="Longest image side the engine works at (results are always "
                                      "in the footage's resolution)")
    zoom: BoolProperty(name="Zoom", default=False,
                       description="The focal length changes during the shot (solve it per frame)")
    distortion: EnumProperty(
        name="Distortion", default="NONE",
        items=[("NONE", "None", "No lens distortion"),
               ("K1", "K1", "Solve radial distortion k1 (Blender polynomial model)"),
               ("K1K2", "K1, K2", "Solve radial distortion k1 and k2")])
    principal_point: EnumProperty(
        name="Principal Point", default="AUTO",
        items=[("AUTO", "Automatic", "Solve the principal point when the footage pins it (e.g. "
                                     "wide-lens pans), else keep the image centre; the solve "
                                     "report says which"),
               ("CENTRE", "Image Centre", "Keep the principal point at the image centre")])
    use_known_focal: BoolProperty(name="Known Focal Length", default=False,
                                  description="Use the focal length and sensor width of the clip's "
                                              "Camera Data (Track > Camera) instead of solving it")
    # The result (filled by Track Clip or Load Result).
    result_path: StringProperty(name="Result", subtype="FILE_PATH", options=_REL,
                                description="Track file of this clip's result")
    cache_key: StringProperty(name="Cache Key", description="Footage content + settings hash")
    n_frames: IntProperty(name="Frames")
    n_tracks: IntProperty(name="Tracks")
    solve_error: FloatProperty(name="Solve Error", subtype="PIXEL", default=-1.0,
                               description="RMS reprojection error of the solve, pixels (-1: unknown)")
    time_s: FloatProperty(name="Time", subtype="TIME_ABSOLUTE", unit="TIME_ABSOLUTE",
                          description="Engine time for this result, seconds")
    ground_truth: BoolProperty(name="Ground Truth",
                               description="The result is a generator's ground truth, not an estimate")
    last_error: StringProperty(name="Last Error", description="Why the last run failed")
    solve_warnings: StringProperty(name="Solve Warnings",
                                   description="Warnings of the last camera solve, one per line")
    groups: StringProperty(name="Moving Groups",
                           description="The result's moving groups, one per line: id (the Group "
                                       "filter's value), kind and tracks")


class WorldtrackSceneSettings(bpy.types.PropertyGroup):
    select_mode: EnumProperty(
        name="Tracks", default="RELIABLE",
        items=[("RELIABLE", "Most Reliable", "The N most reliable tracks, spread over the frame"),
               ("CURSOR", "At 2D Cursor", "Tracks near the Clip Editor's 2D cursor at the current frame"),
               ("SELECTED", "Near Selected Tracks",
                "Tracks near the selected Blender tracks' markers at the current frame"),
               ("REGION", "Inside Drawn Region",
                "Tracks inside a mask or an annotation lasso drawn on the clip, at the current frame")])
    region_source: EnumProperty(
        name="Region", default="AUTO",
        items=[("AUTO", "Mask or Annotation",
                "The mask (chosen below or active in the Clip Editor) if it has a closed spline, "
                "else the clip's annotation strokes"),
               ("MASK", "Mask", "Closed splines of the chosen mask, or of the Clip Editor's active mask"),
               ("ANNOTATION", "Annotation",
                "Strokes drawn on the clip with the Annotate tool, each a closed lasso")])
    region_mask: PointerProperty(
        name="Mask", type=bpy.types.Mask,
        description="Mask whose closed splines make the region (empty: the Clip Editor's active mask)")
    count: IntProperty(name="Count", default=50, min=1, max=100000,
                       description="How many tracks (most reliable mode; an upper bound otherwise: "
                                   "the nearest around a point, the most reliable in a region)")
    radius: FloatProperty(name="Radius", default=40.0, min=1.0, subtype="PIXEL",
                          description="Region radius around the cursor / selected markers, pixels")
    cursor: FloatVectorProperty(name="2D Cursor", size=2, default=(0.5, 0.5), subtype="XYZ",
                                description="Region centre, normalised frame coordinates (0,0) "
                                            "bottom-left; taken from the Clip Editor's cursor")
    group: IntProperty(name="Group", default=-2, min=-2,
                       description="Only tracks of this group (-1 static background, k >= 0 moving "
                                   "group k as listed in the status box: rigid objects first, "
                                   "then the non-rigid group; -2 any)")
    point_cache_all: BoolProperty(name="All Tracks", default=True,
                                  description="Point cache of every track (else: the chosen tracks)")
    export_count: IntProperty(name="Native Tracks", default=100, min=1, max=5000,
                              description="How many tracks to export as native Blender tracks")
    scale_distance: FloatProperty(name="Distance", default=1.0, min=1e-6, subtype="DISTANCE",
                                  unit="LENGTH",
                                  description="Real distance between the two selected points")
    use_detected_floor: BoolProperty(name="Detected Plane", default=False,
                                     description="Use the detected ground plane instead of the "
                                                 "selected points")


CLASSES = (WorldtrackClipSettings, WorldtrackSceneSettings)


def attach() -> None:
    bpy.types.MovieClip.worldtrack = PointerProperty(type=WorldtrackClipSettings)
    bpy.types.Scene.worldtrack = PointerProperty(type=WorldtrackSceneSettings)


def detach() -> None:
    for owner in (bpy.types.MovieClip, bpy.types.Scene):
        if hasattr(owner, "worldtrack"):
            del owner.worldtrack
