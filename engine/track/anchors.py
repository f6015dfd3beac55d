"""Anchor fields: few dense passes serve queries on many frames.

Propagating a dense field costs the same whatever the number of points, so instead of one pass
per distinct query frame, the tracker runs passes from a few *anchor* frames and stores each
field (T, 4, h, w) = [x, y, visible, confidence] of every anchor-grid pixel in every frame, on
disk. A query (tq, x) is then served by an anchor whose tracks are visible at tq around x: the
anchor-grid coordinate u with P_a(tq)(u) = x is found by inverting the field (nearest splat +
Gauss-Newton on the bilinear field), and the query's track is the field sampled at u. Queries
that no anchor sees (surface not visible on any anchor frame) trigger a new anchor at the frame
holding most of them. Dense mode uses the same machinery to start new tracks where surface
appears that frame 0 does not see.

All coordinates here are working-resolution pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..match.ops import sample_points
from .field import FieldSettings, propagate
from .frames import FrameStore


#: A pass in one direction stops once fewer than this fraction of its points (and at least 16)
#: have been visible for ``PATIENCE`` consecutive frames. On long clips each anchor then covers a
#: temporal window around its frame instead of the whole clip (cost ~ window, not clip length);
#: later anchors cover the rest, and their windows overlap by at least ``PATIENCE`` frames.
MIN_ALIVE_FRACTION = 0.01
PATIENCE = 24


class AnchorField:
    """The stored result of the dense passes from one anchor frame over its temporal window
    ``span`` = (first frame, last frame + 1); outside it positions are unknown (NaN) and hidden."""

    def __init__(self, store: FrameStore, anchor: int, scratch: Path):
        self.anchor = anchor
        self.span = (anchor, anchor + 1)
        self.h, self.w = store.h, store.w
        self.data = np.lib.format.open_memmap(scratch / f"anchor_{anchor}.npy", mode="w+",
                                              dtype=np.float32, shape=(store.T, 4, store.h, store.w))
        self.budget = store.budget

    def release(self) -> None:
        """Drop the field's mapped pages from the process (with the store's memory limit)."""
        self.budget.release(self.data)

    def run(self, store: FrameStore, cfg: FieldSettings, predict, check, advance) -> None:
        """Propagate forwards and backwards from the anchor frame, each way until the clip ends
        or the pass's points have been (almost) all gone for ``PATIENCE`` frames.
        ``advance(n)`` hears about every frame of the clip exactly once (skipped ones at the end)."""
        lo = hi = self.anchor
        min_alive = max(16, int(MIN_ALIVE_FRACTION * self.h * self.w))
        for direction in (+1, -1):
            if (direction > 0 and self.anchor == store.T - 1) or (direction < 0 and self.anchor == 0):
                continue
            gone = 0
            for st in propagate(store, self.anchor, direction, cfg, predict, check):
                if direction < 0 and st.t == self.anchor and self.anchor < store.T - 1:
                    continue    # the forward pass wrote the anchor frame already
                self.data[st.t, 0:2] = st.pos
                self.data[st.t, 2] = st.vis
                self.data[st.t, 3] = st.conf
                self.release()
                store.release()
                self.budget.trim()
                lo, hi = min(lo, st.t), max(hi, st.t)
                advance()
                gone = gone + 1 if int(np.count_nonzero(st.vis)) < min_alive else 0
                if gone >= PATIENCE:
                    break
        self.span = (lo, hi + 1)
        skipped = store.T - (hi + 1 - lo)
        if skipped:
            advance(skipped)

    def in_span(self, t: int) -> bool:
        return self.span[0] <= t < self.span[1]

    def sample(self, u: np.ndarray, t0: int, t1: int) -> np.ndarray:
        """Fields of frames t0..t1-1 bilinearly sampled at anchor-grid coords u (M, 2) ->
        (M, t1 - t0, 4)."""
        out = np.empty((len(u), t1 - t0, 4), np.float32)
        for j, t in enumerate(range(t0, t1)):
            if self.in_span(t):
                out[:, j] = sample_points(np.asarray(self.data[t]), u)
            else:   # outside this pass's window: unknown position, hidden
                out[:, j] = (np.nan, np.nan, 0.0, 0.0)
        self.release()
        return out

    def invert(self, t: int, xy: np.ndarray, tol: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
        """Anchor-grid coords u (M, 2) whose tracks are visible at frame t at positions xy
        (M, 2); and an ok mask (M,) -- False where no visible track of this anchor reaches xy
        within ``tol`` px (the surface there is not seen from the anchor frame)."""
        m = len(xy)
        u = np.zeros((m, 2), np.float32)
        ok = np.zeros(m, bool)
        if not self.in_span(t):
            return u, ok
        f = np.asarray(self.data[t])
        pos, vis = f[0:2], f[2] > 0.5
        if not vis.any():
            return u, ok
        # 1. splat visible anchor pixels to their (rounded) positions in frame t
        h, w = self.h, self.w
        vy, vx = np.nonzero(vis)
        px = np.round(pos[0, vy, vx]).astype(int)
        py = np.round(pos[1, vy, vx]).astype(int)
        inb = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        index = np.full((h, w), -1, np.int64)
        index[py[inb], px[inb]] = (vy[inb] * w + vx[inb])
        # 2. nearest splatted pixel within a 5x5 neighbourhood of each query
        qx = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
        qy = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
        best = np.full(m, np.inf)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                yy, xx = np.clip(qy + dy, 0, h - 1), np.clip(qx + dx, 0, w - 1)
                cand = index[yy, xx]
                has = cand >= 0
                cy_, cx_ = cand // w, cand % w
                d = np.where(has, np.hypot(pos[0, cy_, cx_] - xy[:, 0], pos[1, cy_, cx_] - xy[:, 1]),
                             np.inf)
                better = d < best
                best[better] = d[better]
                u[better] = np.stack([cx_[better], cy_[better]], 1)
        found = np.isfinite(best)
        # 3. Gauss-Newton on the bilinear field: solve P(u) = xy for sub-pixel u
        for _ in range(3):
            p, jx, jy = self._pos_and_jacobian(pos, u)
            r = xy - p
            det = jx[:, 0] * jy[:, 1] - jx[:, 1] * jy[:, 0]
            good = np.abs(det) > 1e-3
            du = np.zeros_like(u)
            du[good, 0] = (jy[good, 1] * r[good, 0] - jy[good, 0] * r[good, 1]) / det[good]
            du[good, 1] = (-jx[good, 1] * r[good, 0] + jx[good, 0] * r[good, 1]) / det[good]
            u = u + np.clip(du, -1.0, 1.0) * found[:, None]
            u[:, 0] = np.clip(u[:, 0], 0, w - 1)
            u[:, 1] = np.clip(u[:, 1], 0, h - 1)
        p, _, _ = self._pos_and_jacobian(pos, u)
        err = np.hypot(*(p - xy).T)
        visu = sample_points(vis[None].astype(np.float32), u)[:, 0]
        ok = found & (err < tol) & (visu > 0.99)
        self.release()
        return u, ok

    @staticmethod
    def _pos_and_jacobian(pos: np.ndarray, u: np.ndarray):
        def smp(uu):
            return sample_points(pos, uu)

        e = 0.5
        p = smp(u)
        jx = (smp(u + [e, 0]) - smp(u - [e, 0])) / (2 * e)
        jy = (smp(u + [0, e]) - smp(u - [0, e])) / (2 * e)
        return p, jx, jy
