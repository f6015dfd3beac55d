"""Appearance consistency of predicted positions against each track's query-frame appearance.

Descriptors come from the engine's ONNX ``features`` kernel (:class:`engine.match.ops.Kernels`)
on the footage at a working resolution; a track's reference is the descriptor at its query
pixel in its query frame, and its cost at frame t is the mean L1 distance between the 3x3
neighbourhood of descriptors at the reference and at the predicted pixel (a small patch is far
less ambiguous than one descriptor). Frames are decoded one at a time; only the (n, C, 9)
references of a chunk of tracks and one frame's descriptors are ever held. With a memory limit
(``budget``) the references and the (n, T) costs of :func:`appearance_costs` live in disk memory
maps when they do not fit, and each frame's patches are compared in chunks of tracks.

Positions are INPUT pixels (OpenCV); :meth:`engine.decode.Footage.to_work_pixels` maps them.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..match.ops import Kernels, sample_points
from .static import in_image

_OFFS = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.float32)


def _gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def _patch(desc: np.ndarray, xy_work: np.ndarray) -> np.ndarray:
    """(M, C, 9) descriptors sampled at the 3x3 neighbourhood of ``xy_work`` (M, 2)."""
    m = len(xy_work)
    pts = (xy_work[:, None, :] + _OFFS[None]).reshape(-1, 2)
    return sample_points(desc, pts).reshape(m, 9, -1).transpose(0, 2, 1)


def appearance_costs(footage, query: np.ndarray, positions: Callable[[int], np.ndarray],
                     n_frames: int, kernels: Kernels | None = None,
                     check_cancel: Callable[[], None] | None = None, budget=None,
                     work_dir=None) -> np.ndarray:
    """Cost (n, T) float32 of each track's predicted position per frame (NaN where the position
    is NaN). ``positions(t)`` returns (n, 2) input pixels at frame t; ``query`` (n, 3).

    Two streaming passes over the footage: references (up to the last query frame), then costs.
    ``budget`` (:class:`engine.track.memory.MemoryBudget`, None: unlimited) with ``work_dir``:
    where references and costs go when they do not fit, and the chunk of tracks compared at once.
    """
    from ..track.memory import MemoryBudget

    budget = budget or MemoryBudget()
    kernels = kernels or Kernels()
    n = len(query)
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, n_frames - 1)
    ref = None
    for rgb, m in _query_frames(footage, qt, check_cancel):
        desc = kernels.features(_gray(rgb))
        p = _patch(desc, footage.to_work_pixels(query[m, 1:3]))
        if ref is None:
            ref = budget.array((n,) + p.shape[1:], np.float32, work_dir, fill=0)
        ref[m] = p
        budget.release(ref)
    cost = budget.array((n, n_frames), np.float32, work_dir, fill=np.nan)
    if ref is None:
        return cost
    # tracks compared at once: all without a limit; else a tenth of the spare memory's worth of
    # (patch, reference, difference) triples
    rows = n if not budget.limited else int(max(1, min(n, budget.block_bytes(0, 0.1)
                                                        // (3 * ref[0].nbytes))))
    for t, rgb in enumerate(footage.frames()):
        if t >= n_frames:
            break
        if check_cancel:
            check_cancel()
        xy = positions(t)
        ok = np.isfinite(xy).all(1)
        if not ok.any():
            continue
        desc = kernels.features(_gray(rgb))
        for r0 in range(0, n, rows):
            okc = ok[r0:r0 + rows]
            if not okc.any():
                continue
            p = _patch(desc, footage.to_work_pixels(xy[r0:r0 + rows][okc]))
            cost[r0 + np.flatnonzero(okc), t] = np.abs(p - ref[r0:r0 + rows][okc]).mean(axis=(1, 2))
        budget.release(cost, ref)
    return cost


def sweep_costs(footage, query: np.ndarray, uv: np.ndarray, kernels: Kernels | None = None,
                check_cancel: Callable[[], None] | None = None) -> np.ndarray:
    """Appearance costs (n, D, T) float32 of D candidate paths per track: ``uv`` (n, D, T, 2)
    input pixels (NaN = no candidate there), against each track's query appearance (``query``
    (n, 3)). Used to choose a static point's depth along its query ray by appearance alone."""
    kernels = kernels or Kernels()
    n, D, T = uv.shape[:3]
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, T - 1)
    ref = None
    for t, rgb in enumerate(footage.frames()):
        if t > int(qt.max()):
            break
        m = qt == t
        if not m.any():
            continue
        desc = kernels.features(_gray(rgb))
        p = _patch(desc, footage.to_work_pixels(query[m, 1:3]))
        if ref is None:
            ref = np.zeros((n,) + p.shape[1:], np.float32)
        ref[m] = p
    cost = np.full((n, D, T), np.nan, np.float32)
    if ref is None:
        return cost
    W, H = footage.input_size
    for t, rgb in enumerate(footage.frames()):
        if t >= T:
            break
        if check_cancel:
            check_cancel()
        xy = uv[:, :, t].reshape(-1, 2)
        ok = np.isfinite(xy).all(1) & in_image(xy, W, H)
        if not ok.any():
            continue
        desc = kernels.features(_gray(rgb))
        p = _patch(desc, footage.to_work_pixels(xy[ok].astype(np.float32)))
        c = np.full(n * D, np.nan, np.float32)
        c[ok] = np.abs(p - ref[np.flatnonzero(ok) // D]).mean(axis=(1, 2))
        cost[:, :, t] = c.reshape(n, D)
    return cost


def _query_frames(footage, qt: np.ndarray, check_cancel: Callable[[], None] | None = None):
    """Stream the footage up to the last query frame; yield (frame, mask of the queries on it)
    for each frame that has queries (``qt`` (n,) query frame indices)."""
    last_q = int(qt.max()) if len(qt) else -1
    for t, rgb in enumerate(footage.frames()):
        if t > last_q:
            break
        m = qt == t
        if not m.any():
            continue
        if check_cancel:
            check_cancel()
        yield rgb, m


def contrast_map(grey: np.ndarray, window: int = 7) -> np.ndarray:
    """Per-pixel local contrast of a grey image (0..1): the standard deviation in a ``window`` x
    ``window`` box."""
    import cv2

    mu = cv2.blur(grey, (window, window))
    return np.sqrt(np.maximum(cv2.blur(grey * grey, (window, window)) - mu * mu, 0.0))


def query_texture(footage, query: np.ndarray, n_frames: int, window: int = 7,
                  check_cancel: Callable[[], None] | None = None) -> np.ndarray:
    """Local contrast (n,) at each query pixel in its query frame: the standard deviation of the
    grey level (0..1) in a ``window`` x ``window`` box at the working resolution. Textured points
    (high values) have well-determined depths; plain surfaces do not. One streaming pass over
    the footage up to the last query frame; ``query`` (n, 3) ``[t, x, y]`` input px."""
    n = len(query)
    tex = np.full(n, np.nan, np.float32)
    if n == 0:
        return tex
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, n_frames - 1)
    for rgb, m in _query_frames(footage, qt, check_cancel):
        sd = contrast_map(_gray(rgb), window)
        xy = np.round(footage.to_work_pixels(query[m, 1:3].astype(np.float32))).astype(int)
        x = np.clip(xy[:, 0], 0, sd.shape[1] - 1)
        y = np.clip(xy[:, 1], 0, sd.shape[0] - 1)
        tex[m] = sd[y, x]
    return tex
