"""OpenCV DIS optical flow (preset MEDIUM) chained frame to frame, with forward–backward
occlusion checks (Sundaram et al.), bilinear flow sampling. The dense-flow baseline of TAP-Vid."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._chain import chain_tracks, fb_consistent
from ._io import clip_fps, load_frames, write_result

NAME = "dis"


def _sample(flow: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinearly sample an (H, W, 2) flow at (M, 2) pixel positions (edge-clamped)."""
    import cv2

    m = pts.reshape(-1, 1, 2).astype(np.float32)
    out = cv2.remap(flow, m[..., 0], m[..., 1], interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 2)


def track_dis(frames: np.ndarray, query: np.ndarray, preset: str = "MEDIUM",
              fb_abs_px: float = 0.5, fb_rel: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Track queries ``[t, x, y]`` through grey ``frames`` (T, H, W) uint8.

    Returns tracks (N, T, 2) pixels and visible (N, T).
    """
    import cv2

    t, h, w = frames.shape
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset}"))
    cache: dict[tuple[int, int], np.ndarray] = {}

    def flow(i: int, j: int) -> np.ndarray:
        if (i, j) not in cache:
            if len(cache) > 4:  # only the current pair and its reverse are ever reused
                cache.clear()
            cache[(i, j)] = dis.calc(frames[i], frames[j], None)
        return cache[(i, j)]

    def step(i: int, j: int, pts: np.ndarray):
        f = _sample(flow(i, j), pts)
        moved = pts + f
        b = _sample(flow(j, i), moved)
        return moved, fb_consistent(f, b, fb_abs_px, fb_rel)

    return chain_tracks(t, (w, h), query, step)


def run(clip_dir: str | Path, query: np.ndarray, out: str | Path, focal: float | None = None,
        solve: bool = True) -> Path:
    frames = load_frames(clip_dir)
    tracks, vis = track_dis(frames, query)
    return write_result(out, query=query, tracks_2d=tracks, visible=vis,
                        image_size=(frames.shape[2], frames.shape[1]), fps=clip_fps(clip_dir),
                        method=NAME, settings={"preset": "MEDIUM", "fb_abs_px": 0.5, "fb_rel": 0.01})
