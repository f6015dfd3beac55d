"""Choosing which tracks to turn into empties, point caches or surface attachments. Pure numpy.

All pixel coordinates are OpenCV (x right, y down) in the track file's image size; ``t`` is a
track-file frame index (0-based within the tracked range).
"""
from __future__ import annotations

import numpy as np

_CHUNK = 65536


def _score(conf: np.ndarray, vis: np.ndarray, finite3d: np.ndarray) -> np.ndarray:
    # Reliability: how long a track is seen with a known 3D position, weighted by confidence.
    return (conf * (vis & finite3d)).mean(axis=1)


def reliability(data) -> np.ndarray:
    """(N,) reliability score in [0, 1] per track (chunked over tracks; memory-bounded)."""
    out = np.empty(data.n_tracks, np.float32)
    for s in range(0, data.n_tracks, _CHUNK):
        sl = slice(s, min(s + _CHUNK, data.n_tracks))
        fin = np.isfinite(np.asarray(data.tracks_3d[sl])).all(-1)
        out[sl] = _score(np.asarray(data.confidence[sl]), np.asarray(data.visible[sl]), fin)
    return out


def _group_mask(data, group: int | None) -> np.ndarray:
    if group is None or data.group is None:
        return np.ones(data.n_tracks, bool)
    return np.asarray(data.group) == group


def frame_spread_px(data, n: int) -> float:
    """Spacing (px) at which ``n`` chosen tracks would tile the frame: half a tile's side."""
    W, H = data.image_size
    return 0.5 * float(np.sqrt(W * H / max(1, n)))


def most_reliable(data, n: int, group: int | None = None, spread_px: float = 0.0) -> np.ndarray:
    """Indices of the ``n`` most reliable tracks (optionally of one ``group``).

    With ``spread_px`` > 0, tracks closer than that to an already chosen one (at their query
    pixel) are skipped, so the choice covers the frame instead of clustering.
    """
    score = reliability(data)
    score[~_group_mask(data, group)] = -1
    order = np.argsort(-score, kind="stable")
    order = order[score[order] > 0]
    if spread_px <= 0:
        return np.sort(order[:n])
    q = np.asarray(data.query)[:, 1:3]
    chosen: list[int] = []
    cell: dict[tuple[int, int], list[int]] = {}
    for i in order:
        key = (int(q[i, 0] // spread_px), int(q[i, 1] // spread_px))
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cell.get((key[0] + dx, key[1] + dy), ())]
        if near and (np.linalg.norm(q[near] - q[i], axis=1) < spread_px).any():
            continue
        chosen.append(int(i))
        cell.setdefault(key, []).append(int(i))
        if len(chosen) >= n:
            break
    return np.sort(np.asarray(chosen, dtype=np.int64))


def in_circle(data, t: int, center_xy: tuple[float, float], radius_px: float,
              group: int | None = None, max_tracks: int | None = None) -> np.ndarray:
    """Tracks visible at frame ``t`` within ``radius_px`` of ``center_xy`` (nearest first if capped)."""
    idx_all, d_all = [], []
    gm = _group_mask(data, group)
    c = np.asarray(center_xy, np.float64)
    for s in range(0, data.n_tracks, _CHUNK):
        sl = slice(s, min(s + _CHUNK, data.n_tracks))
        xy = np.asarray(data.tracks_2d[sl, t], np.float64)
        vis = np.asarray(data.visible[sl, t]) & gm[sl]
        d = np.linalg.norm(xy - c, axis=1)
        m = vis & (d <= radius_px)
        idx_all.append(np.flatnonzero(m) + s)
        d_all.append(d[m])
    idx = np.concatenate(idx_all) if idx_all else np.zeros(0, np.int64)
    d = np.concatenate(d_all) if d_all else np.zeros(0)
    if max_tracks is not None and len(idx) > max_tracks:
        idx = idx[np.argsort(d, kind="stable")[:max_tracks]]
    return np.sort(idx)


def in_rect(data, t: int, xmin: float, ymin: float, xmax: float, ymax: float,
            group: int | None = None) -> np.ndarray:
    """Tracks visible at frame ``t`` inside the pixel rectangle (inclusive)."""
    gm = _group_mask(data, group)
    out = []
    for s in range(0, data.n_tracks, _CHUNK):
        sl = slice(s, min(s + _CHUNK, data.n_tracks))
        xy = np.asarray(data.tracks_2d[sl, t])
        m = (np.asarray(data.visible[sl, t]) & gm[sl] & (xy[:, 0] >= xmin) & (xy[:, 0] <= xmax)
             & (xy[:, 1] >= ymin) & (xy[:, 1] <= ymax))
        out.append(np.flatnonzero(m) + s)
    return np.concatenate(out) if out else np.zeros(0, np.int64)
