"""Synthetic clips with exact ground truth for the tracker tests (numpy + OpenCV only).

A textured background seen through a per-frame homography (camera motion) with an occluding,
differently textured square moving across it. Ground truth is exact for every query pixel:
background points map through the homographies; square points translate with the square;
background points are hidden while the square covers them; all are hidden outside the frame.
Scores use the shared benchmarks.metrics (TAP-Vid AJ, delta_avg, OA).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """Natural-ish multi-scale texture, uint8 RGB (h, w, 3)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for s, amp in ((4, 1.0), (12, 1.0), (32, 0.8), (96, 0.6)):
        small = rng.random((max(2, h // s), max(2, w // s), 3)).astype(np.float32)
        img += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img -= img.min()
    img /= img.max()
    return (img * 255).astype(np.uint8)


@dataclass
class Clip:
    frames: np.ndarray      # (T, H, W, 3) uint8 RGB
    query: np.ndarray       # (N, 3) [t, x, y]
    tracks: np.ndarray      # (N, T, 2)
    visible: np.ndarray     # (N, T) bool


def make_clip(width: int = 160, height: int = 120, n_frames: int = 24, seed: int = 0,
              motion: str = "homography", square: int = 40, sq_speed: float = 3.0,
              query_stride: int = 8, noise: float = 2.0, gain_drift: float = 0.0) -> Clip:
    """Render a clip and its ground truth for queries on a grid of frame 0."""
    rng = np.random.default_rng(seed)
    big = 3
    bh, bw = height * big, width * big
    bg = texture(bh, bw, seed)
    fg = texture(square, square, seed + 1000)
    # Canvas -> frame homographies: start centred, then drift/rotate/zoom smoothly.
    hs = []
    for t in range(n_frames):
        a = t / max(1, n_frames - 1)
        if motion == "translation":
            ang, sc, tx, ty, px = 0.0, 1.0, 30 * a, 12 * a, 0.0
        else:
            ang, sc, tx, ty, px = 0.12 * a, 1.0 + 0.25 * a, 35 * a, -15 * a, 4e-4 * a
        c, s = np.cos(ang) * sc, np.sin(ang) * sc
        # canvas -> frame: shift the canvas middle into view, translate, then rotate/zoom about
        # the frame centre, with a slight perspective
        cx, cy = width / 2, height / 2
        pre = np.array([[1, 0, tx - width - cx], [0, 1, ty - height - cy], [0, 0, 1.0]])
        rot = np.array([[c, -s, cx], [s, c, cy], [px * 0.1, px * 0.05, 1.0]])
        h = rot @ pre
        hs.append(h)
    t_idx = np.arange(n_frames)
    sq_o = np.stack([-square + 5 + sq_speed * 2.2 * t_idx, 0.3 * height + 0.8 * sq_speed * t_idx],
                    axis=1)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for t in range(n_frames):
        f = cv2.warpPerspective(bg, hs[t], (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        m = np.float32([[1, 0, sq_o[t, 0]], [0, 1, sq_o[t, 1]]])
        sq = cv2.warpAffine(fg, m, (width, height), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.ones((square, square), np.float32), m, (width, height),
                              flags=cv2.INTER_LINEAR)[..., None]
        img = f.astype(np.float32) * (1 - mask) + sq.astype(np.float32) * mask
        img = img * (1.0 + gain_drift * t / n_frames) + rng.normal(0, noise, img.shape)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    ys, xs = np.mgrid[query_stride // 2:height:query_stride, query_stride // 2:width:query_stride]
    q = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    n = len(q)
    on_sq = ((q[:, 0] >= sq_o[0, 0]) & (q[:, 0] < sq_o[0, 0] + square - 1)
             & (q[:, 1] >= sq_o[0, 1]) & (q[:, 1] < sq_o[0, 1] + square - 1))
    canvas = cv2.perspectiveTransform(q[None], np.linalg.inv(hs[0]))[0]
    tracks = np.empty((n, n_frames, 2))
    visible = np.empty((n, n_frames), bool)
    for t in range(n_frames):
        p_bg = cv2.perspectiveTransform(canvas[None], hs[t])[0]
        p_sq = q - sq_o[0] + sq_o[t]
        p = np.where(on_sq[:, None], p_sq, p_bg)
        inside = (p[:, 0] >= 0) & (p[:, 0] <= width - 1) & (p[:, 1] >= 0) & (p[:, 1] <= height - 1)
        covered = ((p[:, 0] >= sq_o[t, 0] + 0.5) & (p[:, 0] <= sq_o[t, 0] + square - 1.5)
                   & (p[:, 1] >= sq_o[t, 1] + 0.5) & (p[:, 1] <= sq_o[t, 1] + square - 1.5))
        tracks[:, t] = p
        visible[:, t] = inside & (on_sq | ~covered)
    query = np.concatenate([np.zeros((n, 1)), q], 1).astype(np.float32)
    return Clip(frames, query, tracks.astype(np.float32), visible)


def write_sequence(clip: Clip, folder) -> str:
    """Write the frames as PNGs frame_0000.png ...; returns the printf pattern."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(clip.frames):
        cv2.imwrite(str(folder / f"frame_{t:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return str(folder / "frame_%04d.png")


def score(query: np.ndarray, clip: Clip, tracks: np.ndarray, visible: np.ndarray) -> dict:
    """TAP-Vid AJ / delta_avg / OA ('first' mode, 256x256 scale) with the shared metrics."""
    from benchmarks.metrics import tapvid_metrics

    h, w = clip.frames.shape[1:3]
    m = tapvid_metrics(query[:, 0], ~clip.visible, clip.tracks, ~np.asarray(visible),
                       np.asarray(tracks), query_mode="first", image_size=(w, h))
    return {"AJ": m["average_jaccard"], "delta_avg": m["average_pts_within_thresh"],
            "OA": m["occlusion_accuracy"]}


def dis_baseline(clip: Clip, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's chained-DIS baseline on the same frames and queries."""
    from benchmarks.baselines.opencv_dis import track_dis

    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip.frames])
    return track_dis(gray, query)
