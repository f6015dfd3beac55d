"""Chain a two-frame point tracker through a clip, forwards and backwards from each query."""
from __future__ import annotations

from typing import Callable

import numpy as np

#: step(i, j, pts (M, 2) float32 at frame i) -> (pts at frame j (M, 2), ok (M,) bool)
StepFn = Callable[[int, int, np.ndarray], tuple[np.ndarray, np.ndarray]]


def chain_tracks(n_frames: int, image_size: tuple[int, int], query: np.ndarray,
                 step: StepFn) -> tuple[np.ndarray, np.ndarray]:
    """Track every query ``[t, x, y]`` to all frames by chaining ``step`` frame to frame.

    Each frame pair is processed once per direction for all points alive on it, so the cost is
    ``2 (T - 1)`` two-frame steps whatever N is. Occlusion is sticky: after the first failed
    step a chained tracker cannot tell whether it is back on the same surface point (it usually
    sits on the occluder), so the point stays occluded for the rest of that direction; its
    position keeps being propagated (TAP-Vid's position accuracy ignores predicted occlusion).
    A point is also occluded outside the image.

    Returns ``tracks (N, T, 2)`` float32 pixels and ``visible (N, T)`` bool.
    """
    n = len(query)
    w, h = image_size
    qf = np.clip(np.round(query[:, 0]).astype(int), 0, n_frames - 1)
    tracks = np.full((n, n_frames, 2), np.nan, np.float32)
    ok_all = np.zeros((n, n_frames), bool)
    tracks[np.arange(n), qf] = query[:, 1:3]
    ok_all[np.arange(n), qf] = True
    for direction in (1, -1):
        cur = np.full((n, 2), np.nan, np.float32)
        alive_ok = np.ones(n, bool)
        frames = range(0, n_frames - 1) if direction == 1 else range(n_frames - 1, 0, -1)
        for i in frames:
            starts = qf == i
            cur[starts] = query[starts, 1:3]
            alive_ok[starts] = True
            alive = np.isfinite(cur[:, 0])
            if not alive.any():
                continue
            j = i + direction
            idx = np.nonzero(alive)[0]
            new, ok = step(i, j, cur[idx])
            cur[idx] = new
            tracks[idx, j] = new
            alive_ok[idx] &= ok
            ok_all[idx, j] = alive_ok[idx]
    inside = ((tracks[..., 0] >= -0.5) & (tracks[..., 0] <= w - 0.5)
              & (tracks[..., 1] >= -0.5) & (tracks[..., 1] <= h - 0.5))
    return tracks, ok_all & inside


def fb_consistent(fwd: np.ndarray, bwd_at_fwd: np.ndarray, abs_px: float = 0.5,
                  rel: float = 0.01) -> np.ndarray:
    """Forward–backward check of Sundaram et al. (ECCV 2010):
    ``|w_f + w_b|^2 < rel (|w_f|^2 + |w_b|^2) + abs_px``, per point."""
    s = np.sum((fwd + bwd_at_fwd) ** 2, axis=-1)
    return s < rel * (np.sum(fwd ** 2, -1) + np.sum(bwd_at_fwd ** 2, -1)) + abs_px
