"""Solved camera: scene set-up (range, fps, resolution), keyed camera, clip background, tracking camera."""
from __future__ import annotations

import bpy
import numpy as np

from . import anim, camera_math
from .blscene import euler_keys, link_object, parent_to_root, scene_extent, ensure_collection, ensure_root, \
    frame_map, world_scale, FrameMap


def setup_scene_from_clip(scene: bpy.types.Scene, clip: bpy.types.MovieClip | None, data) -> FrameMap:
    """Frame range, fps and resolution of ``scene`` to match the clip / track file."""
    fm = frame_map(data, clip)
    scene.frame_start = fm.scene_frame0
    scene.frame_end = fm.scene_frame0 + data.n_frames - 1
    fps, base = camera_math.fps_to_blender(float(data.metadata.get("fps", 24.0)))
    scene.render.fps, scene.render.fps_base = fps, base
    w, h = (clip.size[0], clip.size[1]) if clip is not None and clip.size[0] > 0 else data.image_size
    scene.render.resolution_x, scene.render.resolution_y = int(w), int(h)
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    if clip is not None:
        scene.active_clip = clip
    return fm


def _scaled_K(data, width: int, height: int) -> np.ndarray:
    """Per-frame K rescaled from the track file's image size to (width, height) pixels."""
    w0, h0 = data.image_size
    K = np.asarray(data.K, np.float64).copy()
    sx, sy = width / w0, height / h0
    # Pixel-centre convention: x' + 0.5 = (x + 0.5) * s.
    K[:, 0, 0] *= sx
    K[:, 1, 1] *= sy
    K[:, 0, 2] = (K[:, 0, 2] + 0.5) * sx - 0.5
    K[:, 1, 2] = (K[:, 1, 2] + 0.5) * sy - 0.5
    return K


def build_camera(scene: bpy.types.Scene, clip: bpy.types.MovieClip | None, data,
                 name: str = "WorldtrackCamera") -> bpy.types.Object:
    """Create or update the solved camera: per-frame location/rotation/lens/shift keyframes.

    Also sets up the scene (:func:`setup_scene_from_clip`), makes the camera active, shows the clip
    as its background and writes the intrinsics into ``clip.tracking.camera``.
    """
    fm = setup_scene_from_clip(scene, clip, data)
    W, H = scene.render.resolution_x, scene.render.resolution_y
    s = world_scale(scene)
    root = ensure_root(scene)
    coll = ensure_collection(scene)

    ob = bpy.data.objects.get(name)
    if ob is None or ob.type != "CAMERA":
        ob = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    link_object(ob, coll)
    parent_to_root(ob, root)
    cam = ob.data
    cam.sensor_fit = "AUTO"
    cam.sensor_width = camera_math.DEFAULT_SENSOR_WIDTH_MM
    cam.lens_unit = "MILLIMETERS"
    ob.rotation_mode = "XYZ"

    frames = fm.scene_frames()
    mats = camera_math.blender_camera_matrices(np.asarray(data.cam_to_world), s)
    loc, rot = euler_keys(mats)
    act = anim.new_action(ob, f"{name}Action")
    anim.key_vector(act, ob, "location", frames, loc)
    anim.key_vector(act, ob, "rotation_euler", frames, rot)
    ob.location, ob.rotation_euler = loc[0], rot[0]

    K = _scaled_K(data, W, H)
    lens = camera_math.lens_from_K(K, W, H, cam.sensor_width)
    varying = [k for k in ("lens", "shift_x", "shift_y") if np.ptp(lens[k]) > 1e-6]  # zoom, etc.
    for key in ("lens", "shift_x", "shift_y"):
        setattr(cam, key, float(lens[key][0]))
    if varying:
        cam_act = anim.new_action(cam, f"{name}LensAction")
        for key in varying:
            anim.set_keys(cam_act, cam, key, 0, frames, lens[key])
    elif cam.animation_data is not None and cam.animation_data.action is not None:
        old = cam.animation_data.action
        cam.animation_data.action = None
        if old.users == 0:
            bpy.data.actions.remove(old)

    ext = scene_extent(data, s)
    cam.clip_start = max(1e-3, 0.01 * ext)
    cam.clip_end = max(100.0, 100.0 * ext)
    scene.camera = ob
    if clip is not None:
        _set_background(cam, clip)
        write_tracking_camera(clip, data)
    scene.frame_set(scene.frame_current)
    return ob


def _set_background(cam: bpy.types.Camera, clip: bpy.types.MovieClip) -> None:
    bg = next((b for b in cam.background_images if b.source == "MOVIE_CLIP"), None)
    if bg is None:
        bg = cam.background_images.new()
        bg.source = "MOVIE_CLIP"
    bg.clip = clip
    bg.use_camera_clip = False
    bg.alpha = 1.0
    cam.show_background_images = True


def write_tracking_camera(clip: bpy.types.MovieClip, data) -> None:
    """Intrinsics (first frame) and distortion into ``clip.tracking.camera`` (Blender's units)."""
    W, H = clip.size[0] or data.image_size[0], clip.size[1] or data.image_size[1]
    K = _scaled_K(data, W, H)[0]
    tc = clip.tracking.camera
    tc.sensor_width = camera_math.DEFAULT_SENSOR_WIDTH_MM
    tc.pixel_aspect = 1.0
    tc.units = "MILLIMETERS"
    tc.focal_length = float(0.5 * (K[0, 0] + K[1, 1]) * tc.sensor_width / max(W, H))
    pp = camera_math.principal_point_blender_pixels(K, H)
    if hasattr(tc, "principal_point_pixels"):
        tc.principal_point_pixels = pp
    else:  # pragma: no cover - pre-3.5
        tc.principal = pp
    dist = data.metadata.get("distortion") or {}
    if dist.get("model", "polynomial") == "polynomial":
        tc.distortion_model = "POLYNOMIAL"
        tc.k1, tc.k2, tc.k3 = (float(dist.get(k, 0.0)) for k in ("k1", "k2", "k3"))
