"""Benchmark suites: named lists of clips, rendered once into ``ROOT/<kind>_<seed>/`` and cached.

- ``quick``: one small clip per kind (128x96, 12 frames, 4 samples, 128 queries), seconds each.
- ``full``: 3 clips per kind (seeds 0-2) at 320x240, 48 frames, 16 samples, 1024 queries.
- ``effects``: 2 clips per kind at full size: seed 10 with motion blur, seed 11 with sensor noise
  (1 % of full scale) and exposure changes.

``quick`` and ``full`` match the settings of :mod:`benchmarks.run`, so both share cache keys.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .clip import KINDS, ClipSettings, generate_clip, is_cached
SUITES = ("quick", "full", "effects")


def suite_clips(suite: str) -> list[ClipSettings]:
    """The clips of a named suite, in render order."""
    if suite == "quick":
        return [ClipSettings(k, 0, 128, 96, 12, samples=4, n_queries=128) for k in KINDS]
    if suite == "full":
        return [ClipSettings(k, seed) for seed in (0, 1, 2) for k in KINDS]
    if suite == "effects":
        return [s for k in KINDS for s in (
            ClipSettings(k, 10, motion_blur=True),
            ClipSettings(k, 11, noise=0.01, exposure_change=True))]
    raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")


def clip_dir(root: Path, settings: ClipSettings) -> Path:
    return Path(root) / f"{settings.kind}_{settings.seed}"


def render_suite(root: Path, suite: str | list[ClipSettings] = "quick", force: bool = False,
                 log: Callable[[str], None] | None = print) -> list[Path]:
    """Render every clip of ``suite`` (a name or a list of settings) under ``root``, skipping clips
    already rendered with the same settings (``settings.json`` cache key); returns the clip dirs."""
    dirs = []
    for s in suite_clips(suite) if isinstance(suite, str) else suite:
        d = clip_dir(root, s)
        if not force and is_cached(d, s):
            if log:
                log(f"cached   {d}")
        else:
            t0 = time.perf_counter()
            generate_clip(d, s.kind, s.seed, s.width, s.height, s.n_frames, s.fps, s.motion_blur,
                          s.noise, s.exposure_change, s.n_queries, s.samples, s.with_depth)
            if log:
                log(f"rendered {d} in {time.perf_counter() - t0:.1f} s")
        dirs.append(d)
    return dirs
