"""Cycles rendering (RGB frames and an exact z-depth pass), post effects and mp4 encoding."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import bpy
import numpy as np


@contextlib.contextmanager
def quiet():
    """Silence Blender's per-render log lines on the process's stdout (fd 1) while rendering.

    Set ``WORLDTRACK_BLENDER_LOG=1`` to keep them.
    """
    if os.environ.get("WORLDTRACK_BLENDER_LOG"):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def configure_cycles(scene: bpy.types.Scene, seed: int, samples: int, motion_blur: bool) -> None:
    """Cheap, deterministic Cycles on the CPU: fixed sample count, low light paths, no denoiser."""
    scene.render.engine = "CYCLES"
    cy = scene.cycles
    cy.device = "CPU"
    cy.samples = int(samples)
    cy.use_adaptive_sampling = False
    cy.use_denoising = False
    cy.seed = int(seed)
    cy.use_animated_seed = True  # per-frame noise pattern, so noise is not a static overlay
    cy.max_bounces, cy.diffuse_bounces, cy.glossy_bounces = 3, 2, 1
    cy.transmission_bounces, cy.volume_bounces, cy.transparent_max_bounces = 1, 0, 2
    cy.caustics_reflective = cy.caustics_refractive = False
    cy.pixel_filter_type, cy.filter_width = "BLACKMAN_HARRIS", 1.5
    scene.render.use_persistent_data = True
    scene.render.use_motion_blur = bool(motion_blur)
    scene.render.motion_blur_shutter = 0.5
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    im = scene.render.image_settings
    if hasattr(im, "media_type"):  # Blender >= 5.0
        im.media_type = "IMAGE"
    im.file_format, im.color_mode, im.color_depth, im.compression = "PNG", "RGB", "8", 15


def render_frames(scene: bpy.types.Scene, frames_dir: Path, n_frames: int) -> float:
    """Render frames 0..n_frames-1 to ``frames_dir/00000.png`` ...; returns seconds."""
    frames_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for f in range(n_frames):
        scene.frame_set(f)
        scene.render.filepath = str(frames_dir / f"{f:05d}.png")
        with quiet():
            bpy.ops.render.render(write_still=True)
    return time.perf_counter() - t0


def _depth_material() -> bpy.types.Material:
    """Emission whose radiance is the camera z-depth ('View Z Depth': along the view axis)."""
    mat = bpy.data.materials.new("WT_Depth")
    mat.use_nodes = True
    nt = mat.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)
    cam = nt.nodes.new("ShaderNodeCameraData")
    em = nt.nodes.new("ShaderNodeEmission")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    em.inputs["Color"].default_value = (1, 1, 1, 1)
    nt.links.new(cam.outputs["View Z Depth"], em.inputs["Strength"])
    nt.links.new(em.outputs["Emission"], out.inputs["Surface"])
    return mat


def render_depth(scene: bpy.types.Scene, n_frames: int, scratch: Path) -> np.ndarray:
    """Per-pixel z-depth (T, H, W) float32 from Cycles, OpenCV row order; +inf where no surface.

    One sample per pixel through a 0.01 px box filter, so each value is the depth of the surface
    seen through the pixel centre; motion blur is off (depth at the frame's instant).
    Leaves the scene in depth mode: call after :func:`render_frames`.
    """
    w, h = scene.render.resolution_x, scene.render.resolution_y
    cy = scene.cycles
    cy.samples, cy.use_animated_seed = 1, False
    cy.pixel_filter_type, cy.filter_width = "BOX", 0.01
    cy.max_bounces = 0
    scene.render.use_motion_blur = False
    scene.view_layers[0].material_override = _depth_material()
    black = bpy.data.worlds.new("WT_Black")
    black.use_nodes = True
    black.node_tree.nodes["Background"].inputs["Color"].default_value = (0, 0, 0, 1)
    scene.world = black
    im = scene.render.image_settings
    im.file_format, im.color_mode, im.color_depth = "OPEN_EXR", "RGB", "32"
    im.exr_codec = "ZIP"
    scratch.mkdir(parents=True, exist_ok=True)
    out = np.empty((n_frames, h, w), np.float32)
    for f in range(n_frames):
        scene.frame_set(f)
        path = scratch / f"depth_{f:05d}.exr"
        scene.render.filepath = str(path)
        with quiet():
            bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(str(path))
        try:
            px = np.empty(w * h * img.channels, np.float32)
            img.pixels.foreach_get(px)
            d = px.reshape(h, w, img.channels)[::-1, :, 0]  # Blender rows start at the bottom
        finally:
            bpy.data.images.remove(img)
        path.unlink()
        out[f] = np.where(d > 0, d, np.inf)
    return out


# --------------------------------------------------------------------------------- post effects
def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0, 1)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def exposure_curve(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Per-frame exposure change in stops: a smooth drift plus one brief flash/dip (auto-exposure)."""
    t = np.linspace(0, 1, n_frames)
    ev = rng.uniform(-0.7, 0.7) * (t - 0.5) * 2 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t
                                                                + rng.uniform(0, 6.3))
    c, wdt = rng.uniform(0.2, 0.8), rng.uniform(0.04, 0.1)
    ev += rng.choice([-0.6, 0.6]) * np.exp(-0.5 * ((t - c) / wdt) ** 2)
    return ev


def post_process(frames_dir: Path, n_frames: int, rng: np.random.Generator, noise: float,
                 exposure_change: bool) -> list[float]:
    """Apply per-frame exposure (stops, in linear light) and Gaussian sensor noise (std in 8-bit
    units / 255, i.e. ``noise`` is a fraction of full scale) to the PNGs in place; returns the EV curve.
    """
    import cv2

    ev = exposure_curve(rng, n_frames) if exposure_change else np.zeros(n_frames)
    if not exposure_change and noise <= 0:
        return ev.tolist()
    for f in range(n_frames):
        p = str(frames_dir / f"{f:05d}.png")
        img = cv2.imread(p, cv2.IMREAD_COLOR).astype(np.float64) / 255.0
        if exposure_change:
            img = _linear_to_srgb(_srgb_to_linear(img) * 2.0 ** ev[f])
        if noise > 0:
            img = img + rng.normal(0, noise, img.shape)
        cv2.imwrite(p, np.clip(np.round(img * 255), 0, 255).astype(np.uint8))
    return ev.tolist()


# ---------------------------------------------------------------------------------------- video
def encode_mp4(frames_dir: Path, out_path: Path, n_frames: int, fps: float, width: int,
               height: int) -> str:
    """Encode the PNG sequence as H.264 mp4 with Blender's own FFmpeg writer (sequencer strip).

    Returns a short description of the encoder used. Uses a separate scene, so the clip scene is
    untouched.
    """
    if width % 2 or height % 2:
        raise ValueError(f"H.264 (yuv420p) needs an even width and height, got {width}x{height}")
    sc = bpy.data.scenes.new("WT_Encode")
    sc.render.resolution_x, sc.render.resolution_y = width, height
    sc.render.resolution_percentage = 100
    fps_int = max(1, int(round(fps)))
    sc.render.fps, sc.render.fps_base = fps_int, fps_int / fps
    sc.frame_start, sc.frame_end = 1, n_frames
    sc.view_settings.view_transform = "Standard"
    sc.view_settings.look = "None"
    sed = sc.sequence_editor_create()
    strips = sed.strips if hasattr(sed, "strips") else sed.sequences  # 5.x / 4.x
    names = [f"{f:05d}.png" for f in range(n_frames)]
    strip = strips.new_image("frames", str(frames_dir / names[0]), 1, 1)
    for n in names[1:]:
        strip.elements.append(n)
    strip.frame_final_duration = n_frames
    im = sc.render.image_settings
    if hasattr(im, "media_type"):
        im.media_type = "VIDEO"
    im.file_format = "FFMPEG"
    ff = sc.render.ffmpeg
    ff.format, ff.codec = "MPEG4", "H264"
    ff.constant_rate_factor = "PERC_LOSSLESS"
    ff.ffmpeg_preset = "GOOD"
    ff.gopsize = 12
    ff.use_max_b_frames = False
    ff.audio_codec = "NONE"
    sc.render.use_sequencer = True
    sc.render.use_compositing = False
    sc.render.use_file_extension = False
    sc.render.filepath = str(out_path)
    out_path.unlink(missing_ok=True)
    with bpy.context.temp_override(scene=sc), quiet():
        bpy.ops.render.render(animation=True, scene=sc.name)
    bpy.data.scenes.remove(sc)
    if not out_path.is_file():
        raise RuntimeError(f"Blender's FFmpeg writer did not produce {out_path}")
    return "blender-ffmpeg h264 crf=perceptually-lossless"
