"""Appearance consistency of predicted positions against each track's query-frame appearance.

Descriptors come from the engine's ONNX ``features`` kernel (:class:`engine.match.ops.Kernels`)
on the footage at a working resolution; a track's reference is the descriptor at its query
pixel in its query frame, and its cost at frame t is the mean L1 distance between the 3x3
neighbourhood of descriptors at the reference and at the predicted pixel (a small patch is far
less ambiguous than one descriptor). Frames are decoded one at a time; the (n, C, 9)
references of a chunk of tracks and one frame's descriptors are held, plus the descriptors a
:class:`DescriptorCache` keeps between passes (up to its byte limit). With a memory limit
(``budget``) the references and the (n, T) costs of :func:`appearance_costs` live in disk memory
maps when they do not fit, and each frame's patches are compared in chunks of tracks.

Positions are INPUT pixels (OpenCV); :meth:`engine.decode.Footage.to_work_pixels` maps them.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ..match.ops import Kernels, sample_points
from ..parallel import ordered_map
from .static import in_image

_TILED_REF_BYTES = 64 << 20    # largest copy of the references repeated over the candidates
_OFFS = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.float32)


def _gray(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def _patch(desc: np.ndarray, xy_work: np.ndarray) -> np.ndarray:
    """(M, C, 9) descriptors sampled at the 3x3 neighbourhood of ``xy_work`` (M, 2) (a view of
    (M, 9, C) memory)."""
    return sample_points(desc, xy_work, _OFFS).transpose(0, 2, 1)


class DescriptorCache:
    """The footage's per-frame descriptors, kept between the refine stage's streaming passes
    (the appearance visibility, every chunk of the depth sweep and of the plain regions stream
    the footage again) up to ``max_bytes``; frames beyond that are described again on each pass,
    and once every frame is held the footage is not decoded any more. ``max_bytes=0``: no cache
    (one pass). ``kernels``: the ONNX kernels (default sessions when None)."""

    def __init__(self, footage, kernels: Kernels | None = None, max_bytes: int = 0):
        self.footage = footage
        self.kernels = kernels or Kernels()
        self.max_bytes = int(max_bytes)
        self._store: dict[int, np.ndarray] = {}
        self._bytes = 0

    def holds_all(self, n: int) -> bool:
        """Whether the descriptors of frames ``0 .. n - 1`` (as many as the footage has) are
        all held: :meth:`frames` then only reads them, so threads may stream them at once."""
        return all(t in self._store for t in range(min(int(n), self.footage.n_frames)))

    def frames(self, last: int) -> Iterator[tuple[int, Callable[[], np.ndarray]]]:
        """Yield ``(t, get)`` for frames ``t = 0 .. last`` (fewer if the footage is shorter);
        ``get()`` returns frame t's descriptors (C, h, w) at the working resolution, computed
        only when asked for."""
        n = min(int(last) + 1, self.footage.n_frames)
        if self.holds_all(n):
            for t in range(n):
                yield t, (lambda t=t: self._store[t])
            return          # (also every n <= 0: nothing to stream)
        for t, rgb in enumerate(self.footage.frames()):
            yield t, (lambda t=t, rgb=rgb: self._describe(t, rgb))
            if t >= n - 1:      # stop before decoding a frame nobody asked for
                return

    def _describe(self, t: int, rgb: np.ndarray) -> np.ndarray:
        d = self._store.get(t)
        if d is None:
            # held with the channels interleaved (a planar view of (h, w, C) memory):
            # sample_points then reads it without a copy
            d = np.moveaxis(np.ascontiguousarray(
                np.moveaxis(self.kernels.features(_gray(rgb)), 0, -1)), -1, 0)
            if self._bytes + d.nbytes <= self.max_bytes:
                self._store[t] = d
                self._bytes += d.nbytes
        return d


def appearance_costs(footage, query: np.ndarray, positions: Callable[[int], np.ndarray],
                     n_frames: int, kernels: Kernels | None = None,
                     check_cancel: Callable[[], None] | None = None, budget=None,
                     work_dir=None, descs: DescriptorCache | None = None) -> np.ndarray:
    """Cost (n, T) float32 of each track's predicted position per frame (NaN where the position
    is NaN). ``positions(t)`` returns (n, 2) input pixels at frame t; ``query`` (n, 3).

    Two streaming passes over the footage: references (up to the last query frame), then costs.
    ``budget`` (:class:`engine.track.memory.MemoryBudget`, None: unlimited) with ``work_dir``:
    where references and costs go when they do not fit, and the chunk of tracks compared at once.
    ``descs``: descriptors kept from earlier passes (:class:`DescriptorCache`; None: none).
    """
    from ..track.memory import MemoryBudget

    budget = budget or MemoryBudget()
    descs = descs or DescriptorCache(footage, kernels)
    n = len(query)
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, n_frames - 1)
    ref = None
    for t, get in descs.frames(int(qt.max()) if n else -1):
        m = qt == t
        if not m.any():
            continue
        if check_cancel:
            check_cancel()
        p = _patch(get(), footage.to_work_pixels(query[m, 1:3]))
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
    for t, get in descs.frames(n_frames - 1):
        if check_cancel:
            check_cancel()
        xy = positions(t)
        ok = np.isfinite(xy).all(1)
        if not ok.any():
            continue
        desc = get()
        for r0 in range(0, n, rows):
            okc = ok[r0:r0 + rows]
            if not okc.any():
                continue
            p = _patch(desc, footage.to_work_pixels(xy[r0:r0 + rows][okc]))
            cost[r0 + np.flatnonzero(okc), t] = np.abs(p - ref[r0:r0 + rows][okc]).mean(axis=(1, 2))
        budget.release(cost, ref)
    return cost


def sweep_costs(footage, query: np.ndarray, uv: np.ndarray, kernels: Kernels | None = None,
                check_cancel: Callable[[], None] | None = None,
                descs: DescriptorCache | None = None, workers: int = 1) -> np.ndarray:
    """Appearance costs (n, D, T) float32 of D candidate paths per track: ``uv`` (n, D, T, 2)
    input pixels (NaN = no candidate there), against each track's query appearance (``query``
    (n, 3)). Used to choose a static point's depth along its query ray by appearance alone.
    ``descs``: descriptors kept from earlier passes (:class:`DescriptorCache`; None: none).
    ``workers``: frames compared at once in threads (:mod:`engine.parallel`; the same result,
    each in flight holds (n, D, C, 9) patches)."""
    descs = descs or DescriptorCache(footage, kernels)
    n, D, T = uv.shape[:3]
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, T - 1)
    ref = None
    # patches are compared as the sampler lays them out, (9 taps x C channels) per point, one
    # contiguous row each: several times faster than the (C, 9) view of :func:`_patch` (the
    # same cost up to the order of the float32 sum)
    for t, get in descs.frames(int(qt.max()) if n else -1):
        m = qt == t
        if not m.any():
            continue
        p = sample_points(get(), footage.to_work_pixels(query[m, 1:3]), _OFFS)
        if ref is None:
            ref = np.zeros((n, 1, p.shape[1] * p.shape[2]), np.float32)
        ref[m, 0] = p.reshape(len(p), -1)
    cost = np.full((n, D, T), np.nan, np.float32)
    if ref is None:
        return cost
    W, H = footage.input_size
    # the mean over a patch's values as a matrix-vector product (summed in BLAS order: the
    # float32 mean to ~1e-7)
    mean_w = np.full(ref.shape[-1], 1.0 / ref.shape[-1], np.float32)
    # which candidates are in frame, for every frame in one pass (not one strided pass each;
    # NaN positions are outside)
    inside = in_image(uv, W, H)                                         # (n, D, T)
    # the references repeated over the D candidates, once for all frames: the subtraction
    # below is then one flat pass (2x faster than broadcasting, the same values); skipped
    # where that copy would be large
    if n * D * ref.shape[-1] * 4 <= _TILED_REF_BYTES:
        ref = np.ascontiguousarray(np.broadcast_to(ref, (n, D, ref.shape[-1])))

    def frame_costs(t: int, desc: np.ndarray) -> None:
        ok = inside[:, :, t].reshape(-1)
        if not ok.any():
            return
        xy = uv[:, :, t].reshape(-1, 2)
        # every candidate is sampled (those out of frame at a dummy position, then blanked):
        # the references then line up with the D candidates instead of being gathered
        p = sample_points(desc, footage.to_work_pixels(
            np.where(ok[:, None], xy, 0).astype(np.float32)), _OFFS)
        # |patch - reference| in place on the samples: no second (n, D, 72) array
        d = p.reshape(n, D, -1)
        np.subtract(d, ref, out=d)
        np.abs(d, out=d)
        c = (d.reshape(n * D, -1) @ mean_w).reshape(n, D)
        c[~ok.reshape(n, D)] = np.nan
        cost[:, :, t] = c

    # frames in threads (descriptors fetched on this thread, in order)
    for _ in ordered_map(frame_costs, ((t, get()) for t, get in descs.frames(T - 1)), workers,
                         check_cancel):
        pass
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
