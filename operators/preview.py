"""Headless preview render: the CG (Cycles, few samples, transparent film) over the footage frame.

Used by the demo command and the tests; not needed by the artist's UI (they render normally with
the clip in the compositor)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import bpy
import numpy as np


def _image_pixels(path: Path) -> np.ndarray:
    """(H, W, 4) float pixels of an image file, top row first (Blender stores bottom-up)."""
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = img.size
        px = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(px)
        return px.reshape(h, w, 4)[::-1].copy()
    finally:
        bpy.data.images.remove(img)


def footage_frame(clip: bpy.types.MovieClip, scene_frame: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the footage shown at ``scene_frame`` (via the engine's decoder)."""
    from ..engine.decode.footage import open_footage
    from .build import footage_base

    num = scene_frame - clip.frame_start + clip.frame_offset + footage_base(clip)
    path = bpy.path.abspath(clip.filepath, library=clip.library)
    fr = next(iter(open_footage(path, frames=(num, num)).frames()))
    return np.asarray(fr)


def render_preview(scene: bpy.types.Scene, out_png: str | Path, frame: int | None = None,
                   clip: bpy.types.MovieClip | None = None, samples: int = 8) -> dict:
    """Render ``scene``'s camera at ``frame`` with Cycles over the clip's footage into ``out_png``.

    Returns ``{"png": path, "alpha": (H, W) float coverage of the CG, top row first}``.
    """
    clip = clip if clip is not None else scene.active_clip
    if frame is not None:
        scene.frame_set(int(frame))
    r = scene.render
    old = (r.engine, r.film_transparent, r.filepath, r.image_settings.file_format,
           r.image_settings.color_mode, scene.view_settings.view_transform)
    try:
        r.engine = "CYCLES"
        scene.cycles.samples = samples
        scene.cycles.device = "CPU"
        if hasattr(scene.cycles, "use_denoising"):
            scene.cycles.use_denoising = False
        r.film_transparent = True
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        scene.view_settings.view_transform = "Standard"
        with tempfile.TemporaryDirectory() as tmp:
            r.filepath = str(Path(tmp) / "cg.png")
            bpy.ops.render.render(write_still=True, scene=scene.name)
            cg = _image_pixels(Path(tmp) / "cg.png")
    finally:
        (r.engine, r.film_transparent, r.filepath, r.image_settings.file_format,
         r.image_settings.color_mode, scene.view_settings.view_transform) = old
    H, W = cg.shape[:2]
    bg = np.zeros((H, W, 3), np.float32)
    if clip is not None:
        fr = footage_frame(clip, scene.frame_current).astype(np.float32) / 255.0
        if fr.shape[:2] == (H, W):
            bg = fr
    a = cg[..., 3:4]
    comp = cg[..., :3] * a + bg * (1 - a)  # straight alpha from Blender's PNG
    out = bpy.data.images.new("worldtrack_preview", W, H, alpha=False)
    try:
        rgba = np.concatenate([comp, np.ones((H, W, 1), np.float32)], -1)[::-1]
        out.pixels.foreach_set(np.ascontiguousarray(rgba).ravel())
        out.filepath_raw = str(out_png)
        out.file_format = "PNG"
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        out.save()
    finally:
        bpy.data.images.remove(out)
    return {"png": Path(out_png), "alpha": cg[..., 3]}
