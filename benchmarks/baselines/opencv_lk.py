"""Pyramidal Lucas–Kanade (cv2.calcOpticalFlowPyrLK) chained frame to frame, with a
forward–backward check (a point is occluded at a frame when tracking back lands > 1 px away)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._chain import chain_tracks
from ._io import clip_fps, load_frames, write_result

NAME = "lk"
LK_PARAMS = {"winSize": (21, 21), "maxLevel": 3,
             "criteria": (3, 30, 0.01)}  # cv2.TERM_CRITERIA_EPS | COUNT
FB_MAX_PX = 1.0


def lk_step(a: np.ndarray, b: np.ndarray, pts: np.ndarray, fb_max: float = FB_MAX_PX):
    """One LK step a -> b with FB check. Failed points keep their position."""
    import cv2

    p0 = pts.reshape(-1, 1, 2).astype(np.float32)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **LK_PARAMS)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **LK_PARAMS)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < fb_max)
    new = p1.reshape(-1, 2)
    new = np.where((st1.ravel() == 1)[:, None] & np.isfinite(new), new, pts)
    return new.astype(np.float32), ok


def track_lk(frames: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Track queries ``[t, x, y]`` through grey ``frames`` (T, H, W) uint8."""
    t, h, w = frames.shape
    return chain_tracks(t, (w, h), query, lambda i, j, p: lk_step(frames[i], frames[j], p))


def run(clip_dir: str | Path, query: np.ndarray, out: str | Path, focal: float | None = None,
        solve: bool = True) -> Path:
    frames = load_frames(clip_dir)
    tracks, vis = track_lk(frames, query)
    return write_result(out, query=query, tracks_2d=tracks, visible=vis,
                        image_size=(frames.shape[2], frames.shape[1]), fps=clip_fps(clip_dir),
                        method=NAME, settings={"winSize": 21, "maxLevel": 3, "fb_max_px": FB_MAX_PX})
