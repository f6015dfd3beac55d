"""Choose the tracks and frames the camera solve works on.

The dense tracker can hand over ~10^5 tracks; the solve only needs a few thousand that are long,
confident and spread over the image. Keyframes are picked by image motion so that the expensive
reconstruction runs on a handful of frames with useful parallax.
"""
from __future__ import annotations

import numpy as np


def select_tracks(tracks_2d: np.ndarray, visible: np.ndarray, confidence: np.ndarray | None,
                  image_size: tuple[int, int], max_tracks: int = 1500, min_len: int = 3,
                  grid: tuple[int, int] = (16, 12), chunk: int = 32768) -> np.ndarray:
    """Indices of at most ``max_tracks`` well-distributed, long, confident tracks.

    Score = visible frames x mean confidence over them; tracks are binned on a ``grid`` by
    their mean image position and taken round-robin, best first, so no region dominates.
    Works chunk-wise so memory-mapped inputs of any N stay cheap.
    """
    W, H = image_size
    N = tracks_2d.shape[0]
    score = np.zeros(N)
    cell = np.zeros(N, dtype=np.int64)
    for s in range(0, N, chunk):
        v = np.asarray(visible[s:s + chunk])
        xy = np.asarray(tracks_2d[s:s + chunk], dtype=np.float64)
        n = v.sum(1)
        c = np.asarray(confidence[s:s + chunk], dtype=np.float64) if confidence is not None else v
        conf = np.where(n > 0, (c * v).sum(1) / np.maximum(n, 1), 0)
        score[s:s + chunk] = np.where(n >= min_len, n * (0.25 + conf), 0)
        with np.errstate(invalid="ignore"):
            m = np.nansum(np.where(v[..., None], xy, 0), axis=1) / np.maximum(n, 1)[:, None]
        gx = np.clip((m[:, 0] / W * grid[0]).astype(int), 0, grid[0] - 1)
        gy = np.clip((m[:, 1] / H * grid[1]).astype(int), 0, grid[1] - 1)
        cell[s:s + chunk] = gy * grid[0] + gx
    ok = np.flatnonzero(score > 0)
    if len(ok) <= max_tracks:
        return ok
    # rank within each cell, then take rank 0 of every cell, rank 1, ...
    order = ok[np.lexsort((-score[ok], cell[ok]))]
    c = cell[order]
    start = np.r_[0, np.flatnonzero(np.diff(c)) + 1]
    rank = np.arange(len(order)) - np.repeat(start, np.diff(np.r_[start, len(order)]))
    pick = order[np.lexsort((-score[order], rank))][:max_tracks]
    return np.sort(pick)


def select_keyframes(xy: np.ndarray, vis: np.ndarray, image_size: tuple[int, int],
                     motion_frac: float = 0.04, min_overlap: float = 0.6,
                     max_gap: int = 8) -> list[int]:
    """Keyframes: a new one when the median motion since the last one exceeds ``motion_frac`` of
    the image diagonal, when fewer than ``min_overlap`` of its tracks survive, or every
    ``max_gap`` frames. First and last frame are always keyframes. Short clips (< 12 frames)
    use every frame.
    """
    T = vis.shape[1]
    if T < 12:
        return list(range(T))
    diag = float(np.hypot(*image_size))
    kfs = [0]
    for t in range(1, T):
        k = kfs[-1]
        both = vis[:, k] & vis[:, t]
        nk = max(1, int(vis[:, k].sum()))
        if both.sum() < 8:
            kfs.append(t)
            continue
        mot = np.median(np.linalg.norm(xy[both, t] - xy[both, k], axis=1))
        if mot > motion_frac * diag or both.sum() < min_overlap * nk or t - k >= max_gap:
            kfs.append(t)
    if kfs[-1] != T - 1:
        kfs.append(T - 1)
    return kfs
