"""Ground-truth clip generator: random Blender scenes rendered with Cycles, with exact answers.

``generate_clip(out_dir, kind, seed, ...)`` (needs ``bpy``; resets Blender's current file) writes

- ``frames/00000.png`` ... — 8-bit RGB, frame index t = Blender frame t;
- ``clip.mp4`` — the same frames as H.264 (Blender's FFmpeg writer; OpenCV and Blender's movie
  clip loader both read it; Blender numbers its frames from 1);
- ``gt.npz`` — a track file (:mod:`engine.trackfile`) with ``metadata["ground_truth"] = True``:
  ``query`` (about half on a jittered grid at frame 0, the rest at random later frames, always on
  a surface), ``tracks_2d`` (NaN only where the point is behind the camera), ``visible`` (in the
  image and not hidden by another object or by its own object), ``confidence`` (= visible),
  ``tracks_3d`` (world, metres, also while occluded), ``cam_to_world`` (OpenCV camera axes),
  ``K`` (per frame; changes in ``zoom`` clips), ``group`` (−1 static, k ≥ 0 moving object k),
  ``colors`` (query pixel RGB) and ``depth`` (T, H, W) z-depth along the camera's +z, ``inf``
  where only sky is seen. Metadata: ``kind``, ``seed``, ``generator`` (all settings, cache key,
  Blender version, timings), ``dynamic_groups`` ``{"k": "rigid" | "deform"}``, ``group_names``
  and ``self_check`` (see :mod:`.selfcheck`);
- ``settings.json`` — the settings and cache key, written last (marks a complete clip).

Kinds: ``static`` (hand-held orbit/dolly + shake over static props), ``dynamic`` (+ 2–5 moving,
spinning rigid objects, the first one near the camera), ``tripod`` (rotation about a fixed optical
centre), ``zoom`` (animated focal length), ``deform`` (a bending/twisting tube + 1–2 rigid movers).
Suites for the benchmark: :func:`render_suite` / ``python -m benchmarks.generate --suite quick``.
"""
from __future__ import annotations

from .clip import KINDS, ClipSettings, GroundTruthError, generate_clip, is_cached
from .suite import SUITES, clip_dir, render_suite, suite_clips

__all__ = ["generate_clip", "ClipSettings", "GroundTruthError", "is_cached", "KINDS", "SUITES",
           "clip_dir", "render_suite", "suite_clips"]
