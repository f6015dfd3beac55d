"""Disk-backed store of the decoded clip at working resolution, with cached descriptor pyramids.

The tracker needs random access to frames (passes run forwards and backwards from every query
frame), but RAM must stay bounded for long clips: frames are decoded once, streamed into a
``uint8`` memory map in a scratch folder, and descriptor pyramids are computed on demand and
kept in a small LRU cache. Consecutive-frame flows (forward t->t+1 and backward t+1->t) are
computed once per pair and kept in another memory map. They only initialise the tracker (the
chained prediction and the pairwise forward-backward test): by default OpenCV's DIS (fast and
precise on noisy footage), or the ONNX matcher (``pair_flow="onnx"``).

With a memory limit (``budget``, see :mod:`.memory`) the pyramid cache holds what the limit
allows (at least the two frames one propagation step uses) and :meth:`FrameStore.release` drops
the memory maps' pages from the process after each step, so the resident set does not grow with
the clip's length.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..decode import Footage
from ..match.ops import Kernels, n_levels, resize_flow
from ..progress import stage_of
from .memory import MemoryBudget


class FrameStore:
    """Working-resolution RGB frames (T, h, w, 3) uint8 on disk, plus cached derived data."""

    def __init__(self, footage: Footage, kernels: Kernels, scratch_dir: str | Path | None = None,
                 progress=None, cache_frames: int = 6, pair_flow: str = "onnx",
                 budget: MemoryBudget | None = None):
        self.footage = footage
        self.k = kernels
        self.budget = budget or MemoryBudget()
        w, h = footage.work_size
        cache_frames = self.budget.cache_frames(cache_frames, (w, h))
        self.h, self.w = h, w
        self.T = footage.n_frames
        self.levels = n_levels(h, w)
        self._dir = Path(tempfile.mkdtemp(prefix=".wt-frames-", dir=scratch_dir))
        self.rgb = np.lib.format.open_memmap(self._dir / "rgb.npy", mode="w+", dtype=np.uint8,
                                             shape=(self.T, h, w, 3))
        self._flows = None       # (T-1, 2 [fwd, bwd], 2, h, w) float16 (±0.03 px), lazily filled
        self._have_flow = np.zeros(max(0, self.T - 1), bool)
        self._pyr: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._cache_frames = cache_frames
        if pair_flow not in ("dis", "onnx"):
            raise ValueError(f"pair_flow must be 'dis' or 'onnx', got {pair_flow!r}")
        self.pair_flow = pair_flow
        self._dis = None
        self._fill(progress)

    def _fill(self, progress) -> None:
        n = 0
        stage = stage_of(progress, "decode", self.T)
        stage.__enter__()
        for t, frame in enumerate(self.footage.frames()):
            if t >= self.T:
                break
            self.rgb[t] = frame
            n += 1
            self.budget.release(self.rgb)
            stage.advance()
        stage.__exit__(None, None, None)
        if n < self.T:
            from ..decode import DecodeError

            raise DecodeError(f"{self.footage.path}: only {n} of {self.T} frames could be decoded")

    def gray(self, t: int) -> np.ndarray:
        """Grey frame t (h, w) float32 in [0, 1]."""
        import cv2

        return cv2.cvtColor(np.asarray(self.rgb[t]), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0

    def pyramid(self, t: int) -> list[np.ndarray]:
        """Descriptor pyramid of frame t (LRU-cached)."""
        if t in self._pyr:
            self._pyr.move_to_end(t)
            return self._pyr[t]
        p = self.k.pyramid(self.gray(t), self.levels)
        self._pyr[t] = p
        while len(self._pyr) > self._cache_frames:
            self._pyr.popitem(last=False)
        return p

    def pair_flows(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(forward t->t+1, backward t+1->t) dense flows, each (2, h, w) in working pixels."""
        if self._flows is None:
            self._flows = np.lib.format.open_memmap(
                self._dir / "flows.npy", mode="w+", dtype=np.float16,
                shape=(max(1, self.T - 1), 2, 2, self.h, self.w))
        if not self._have_flow[t] and self.pair_flow == "dis":
            import cv2

            if self._dis is None:
                self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            a = (self.gray(t) * 255).astype(np.uint8)
            b = (self.gray(t + 1) * 255).astype(np.uint8)
            self._flows[t, 0] = self._dis.calc(a, b, None).transpose(2, 0, 1)
            self._flows[t, 1] = self._dis.calc(b, a, None).transpose(2, 0, 1)
            self._have_flow[t] = True
        if not self._have_flow[t]:
            a, b = self.pyramid(t), self.pyramid(t + 1)
            # Above ~200 px the chained prediction is computed at half resolution: it only has
            # to land within the direct matcher's search range, which then refines at full res.
            last = 1 if min(self.h, self.w) >= 200 and self.levels > 2 else 0
            fwd, _, _ = self.k.flow(a, b, last_level=last)
            bwd, _, _ = self.k.flow(b, a, last_level=last)
            fwd, bwd = resize_flow(fwd, self.h, self.w), resize_flow(bwd, self.h, self.w)
            self._flows[t, 0] = fwd
            self._flows[t, 1] = bwd
            self._have_flow[t] = True
        return (np.asarray(self._flows[t, 0], np.float32),
                np.asarray(self._flows[t, 1], np.float32))

    def release(self) -> None:
        """Drop the frames' and flows' mapped pages from the process (with a memory limit)."""
        self.budget.release(self.rgb, self._flows)

    def close(self) -> None:
        self._pyr.clear()
        self.rgb = None
        self._flows = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "FrameStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
