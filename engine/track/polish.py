"""Sub-pixel polish of tracks at the footage's own resolution.

The tracker matches at a working resolution (``--max-side``, 640 px by default), so on HD or 4K
footage its positions carry the working grid's error times the downscale factor: a third of a
working pixel is a whole pixel of 1080p. A matchmove needs sub-pixel tracks at the source
resolution, so after tracking each point is re-aligned on the full-resolution frames against
its own template from its query frame (where its position is exact): an inverse-compositional
Lucas-Kanade on zero-mean, unit-variance patches (so exposure changes do not pull it), started
from the tracker's position. A polished position is kept only where it is trustworthy --
the aligned patch matches the template well (ZNCC), the match is better than at the tracker's
position, and it moved by at most about one working pixel -- so the tracker's decisions
(occlusion, re-finding, long-range identity) stand and only its precision improves.

Coordinates: input pixels, OpenCV convention (centre of the top-left pixel is (0, 0)).
Memory: templates for a chunk of tracks and one block of frames at a time.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from ..decode import Footage
from .memory import MemoryBudget

#: polish runs by default on footage downscaled by at least this much ...
AUTO_MIN_DOWNSCALE = 1.25
#: ... and with at most this many tracks (dense full-HD grids would take minutes)
AUTO_MAX_TRACKS = 40_000
MIN_ZNCC = 0.8          # aligned patch vs template
REFIND_ZNCC = 0.95      # ... on a frame where the tracker saw the point hidden
MIN_TEXTURE = 2.0       # template grey-level std (0..255): flatter patches have nothing to lock on
ITERATIONS = 6


@dataclasses.dataclass
class PolishStats:
    """What the polish did: visible point-frames looked at and moved, hidden ones found
    visible again, and the median move in px."""

    point_frames: int = 0
    moved: int = 0
    refound: int = 0
    median_shift_px: float = float("nan")
    radius: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def polish_wanted(mode: str, footage: Footage, n_tracks: int) -> bool:
    """``mode``: "on", "off" or "auto" (on when the footage was downscaled noticeably and the
    track count keeps the cost to seconds or minutes)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"polish must be 'auto', 'on' or 'off', got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return 1.0 / footage.scale >= AUTO_MIN_DOWNSCALE and n_tracks <= AUTO_MAX_TRACKS


def window_radius(footage: Footage) -> int:
    """Half-size of the alignment window in input px: wider for stronger downscales, whose
    tracker error (a fraction of a working pixel) is more input pixels, 7..11 px."""
    return int(np.clip(round(2.0 / footage.scale), 7, 11))


def polish_chunk(footage: Footage, n_tracks: int, budget: MemoryBudget) -> int:
    """Tracks whose templates are held at once (each chunk streams the clip: up to its last
    query frame for the templates, then all of it for the alignment)."""
    per_track = (2 * window_radius(footage) + 1) ** 2 * 28   # template + six Gauss-Newton rows
    return max(256, min(max(1, n_tracks), int(budget.block_bytes(128 << 20, 0.3) // per_track)))


def _grey(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _sample(img: np.ndarray, xy: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at ``xy`` (M, 2) + ``offs`` (P, 2): (M, P); NaN outside."""
    return _sample_warped(img, xy, offs[None])


def _normalise(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean, unit-variance rows (NaN rows stay NaN); also each row's std."""
    m = p.mean(1, keepdims=True)
    s = p.std(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (p - m) / s, s[:, 0]


class _Templates:
    """Each track's normalised template and its inverse-compositional Gauss-Newton terms for an
    affine warp (the surface around a point turns and scales over a shot; a translation-only
    window would be pulled by that)."""

    def __init__(self, n: int, radius: int):
        g = np.arange(-radius, radius + 1, dtype=np.float32)
        yy, xx = np.meshgrid(g, g, indexing="ij")
        self.offs = np.stack([xx.ravel(), yy.ravel()], 1)            # (P, 2) x, y
        p = len(self.offs)
        self.t = np.zeros((n, p), np.float32)
        self.jt = np.zeros((n, 6, p), np.float32)                    # H^-1 J^T rows
        self.ok = np.zeros(n, bool)
        self.A = np.tile(np.eye(2), (n, 1, 1))                       # last accepted linear part
        self.radius = radius

    def set(self, idx: np.ndarray, img: np.ndarray, xy: np.ndarray, rows: int = 4096) -> None:
        """Templates of the tracks ``idx`` from ``img`` at ``xy`` (M, 2), ``rows`` at a time."""
        if len(idx) > rows:
            for r0 in range(0, len(idx), rows):
                self.set(idx[r0:r0 + rows], img, xy[r0:r0 + rows], rows)
            return
        r = self.radius
        # one extra ring for central-difference gradients of the template
        g = np.arange(-r - 1, r + 2, dtype=np.float32)
        yy, xx = np.meshgrid(g, g, indexing="ij")
        big = _sample(img, xy, np.stack([xx.ravel(), yy.ravel()], 1)).reshape(len(xy), 2 * r + 3,
                                                                               2 * r + 3)
        inner = big[:, 1:-1, 1:-1].reshape(len(xy), -1)
        t, std = _normalise(inner)
        gx = ((big[:, 1:-1, 2:] - big[:, 1:-1, :-2]) * 0.5).reshape(len(xy), -1)
        gy = ((big[:, 2:, 1:-1] - big[:, :-2, 1:-1]) * 0.5).reshape(len(xy), -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            gx, gy = gx / std[:, None], gy / std[:, None]
            a, b, c = (gx * gx).sum(1), (gx * gy).sum(1), (gy * gy).sum(1)
            half = 0.5 * (a + c)
            lmin = half - np.sqrt(np.maximum(0.0, (0.5 * (a - c)) ** 2 + b * b))
            # a well-conditioned translation only: along an edge the patch slides
            ok = (std >= MIN_TEXTURE) & np.isfinite(t).all(1) & np.isfinite(lmin) \
                & (lmin > 0.05 * (2 * half - lmin)) & (lmin > 0.01 * len(self.offs))
        gx, gy = np.nan_to_num(gx), np.nan_to_num(gy)
        x, y = self.offs[:, 0] / r, self.offs[:, 1] / r                 # scaled: conditioning
        J = np.stack([gx * x, gx * y, gx, gy * x, gy * y, gy], 1)       # (m, 6, P)
        H = np.matmul(J, J.transpose(0, 2, 1))
        H += np.eye(6, dtype=np.float32) * (1e-3 * np.trace(H, axis1=1, axis2=2) / 6
                                            + 1e-9)[:, None, None]
        self.t[idx] = np.nan_to_num(t)
        self.jt[idx] = np.linalg.solve(H, J)
        self.ok[idx] = ok

    def align(self, idx: np.ndarray, img: np.ndarray, xy: np.ndarray, rows: int = 4096
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Align the templates ``idx`` in ``img`` starting at ``xy`` (M, 2) with their last
        accepted linear warps, ``rows`` at a time.
        Returns (aligned xy, linear warps (M, 2, 2), ZNCC there, ZNCC at the start)."""
        if len(idx) > rows:
            parts = [self.align(idx[r:r + rows], img, xy[r:r + rows], rows)
                     for r in range(0, len(idx), rows)]
            return tuple(np.concatenate(x) for x in zip(*parts))
        t, jt = self.t[idx], self.jt[idx]
        r = float(self.radius)
        p = xy.astype(np.float64).copy()
        A = self.A[idx].astype(np.float32)
        ox, oy = self.offs[:, 0], self.offs[:, 1]
        z0 = None

        def warped(rows):
            a = A[rows]
            o = np.stack([a[:, 0, :1] * ox + a[:, 0, 1:] * oy,
                          a[:, 1, :1] * ox + a[:, 1, 1:] * oy], -1)   # (m, P, 2)
            return _normalise(_sample_warped(img, p[rows], o))[0]

        live = np.arange(len(idx))
        for _ in range(ITERATIONS):
            w = warped(live)
            if z0 is None:
                z0 = np.mean(w * t, 1)
            d = np.matmul(jt[live], np.nan_to_num(w - t[live])[:, :, None])[:, :, 0]   # (m, 6)
            # compose with the inverse of the increment: x -> (I + D) x + e, in template units
            a, b, c, dd = (np.clip(d[:, k] / r, -0.2, 0.2) for k in (0, 1, 3, 4))
            a, dd = 1.0 + a, 1.0 + dd
            det = a * dd - b * c
            Minv = np.stack([np.stack([dd, -b], 1), np.stack([-c, a], 1)], 1) / det[:, None, None]
            e = np.clip(np.stack([d[:, 2], d[:, 5]], 1), -2.0, 2.0)
            AM = np.matmul(A[live], Minv.astype(np.float32))
            p[live] -= np.matmul(AM, e[:, :, None].astype(np.float32))[:, :, 0]
            A[live] = AM
            # converged points stop: their last step moved them by under a hundredth of a pixel
            live = live[np.abs(e).max(1) > 0.01]
            if not len(live):
                break
        w = warped(np.arange(len(idx)))
        return p, A.astype(np.float64), np.mean(w * t, 1), z0


def _sample_warped(img: np.ndarray, xy: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at ``xy`` (M, 2) + per-track ``offs`` (M or 1, P, 2):
    (M, P); NaN outside."""
    import cv2

    mx = (xy[:, None, 0] + offs[..., 0]).astype(np.float32)
    my = (xy[:, None, 1] + offs[..., 1]).astype(np.float32)
    out = np.empty(mx.shape, np.float32)
    for r0 in range(0, len(mx), 8192):   # remap's maps must stay below 32767 rows
        out[r0:r0 + 8192] = cv2.remap(img, mx[r0:r0 + 8192], my[r0:r0 + 8192], cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    return out


def polish(footage: Footage, query: np.ndarray, tracks: Callable, write: Callable,
           budget: MemoryBudget | None = None,
           tick: Callable[[], None] | None = None) -> PolishStats:
    """Polish tracks at ``footage``'s input resolution (see the module docstring).

    query: (N, 3) ``[t, x, y]`` input px, exact at frame t. ``tracks(rows, t0, t1)`` returns
    the positions (n, B, 2) input px and visibility (n, B) of a slice of tracks over a block of
    frames; ``write(rows, t0, t1, xy, visible)`` stores polished positions (and visibility:
    a point the tracker saw hidden becomes visible where its template matches unmistakably,
    ZNCC >= ``REFIND_ZNCC``) back. Tracks go in chunks
    whose templates fit the budget; per chunk the frames are decoded up to the chunk's last
    query frame (templates), then all of them (alignment), one at a time; ``tick()`` is called
    once per frame of each pass.
    """
    budget = budget or MemoryBudget()
    tick = tick or (lambda: None)
    n = len(query)
    radius = window_radius(footage)
    chunk = polish_chunk(footage, n, budget)
    stats = PolishStats(radius=radius)
    shifts: list[np.ndarray] = []
    for c0 in range(0, n, chunk):
        _polish_chunk(footage, query, np.arange(c0, min(n, c0 + chunk)), radius, tracks, write,
                      budget, tick, stats, shifts)
    allsh = np.concatenate(shifts) if shifts else np.zeros(0)
    if len(allsh):
        stats.median_shift_px = float(np.median(allsh))
    return stats


def _polish_chunk(footage: Footage, query: np.ndarray, rows: np.ndarray, radius: int,
                  tracks: Callable, write: Callable, budget: MemoryBudget, tick,
                  stats: PolishStats, shifts: list) -> None:
    """Templates for the tracks ``rows`` (a contiguous range), then their alignment."""
    full = dataclasses.replace(footage, work_size=footage.input_size)
    T = footage.n_frames
    n = len(rows)
    sl = slice(int(rows[0]), int(rows[-1]) + 1)
    tpl = _Templates(n, radius)
    q = query[sl]
    tq = np.clip(np.round(q[:, 0]).astype(int), 0, T - 1)
    gate = 1.0 / footage.scale                       # one working pixel, in input px
    last_q = int(tq.max())
    for t, rgb in enumerate(full.frames()):
        sel = np.nonzero(tq == t)[0]
        if len(sel):
            tpl.set(sel, _grey(rgb), q[sel, 1:3].astype(np.float64))
        tick()
        if t == last_q:         # no template after this frame: do not decode the rest
            break
    for _ in range(T - 1 - last_q):
        tick()
    if not tpl.ok.any():
        for _ in range(T):
            tick()
        return
    # a frame block of positions (f64 work copy + f32 out + visibility) within the budget
    block = max(1, min(T, int(budget.block_bytes(64 << 20, 0.2) // max(1, n * 25))))
    frames: Iterator[np.ndarray] = full.frames()
    prev_xy, prev_vis = np.zeros((n, 2)), np.zeros(n, bool)
    for t0 in range(0, T, block):
        t1 = min(T, t0 + block)
        xy, vis = tracks(sl, t0, t1)
        xy = np.array(xy, np.float64)
        vis = np.array(vis, bool)
        for j in range(t1 - t0):
            img = _grey(next(frames))
            t = t0 + j
            idx = np.nonzero(tpl.ok & (tq != t) & np.isfinite(xy[:, j]).all(1))[0]
            seen = vis[idx, j]
            stats.point_frames += int(seen.sum())
            if len(idx):
                start = xy[idx, j]
                p, A, z, z0 = tpl.align(idx, img, start)
                # a hidden point's carried position may be far off: also try where it was
                # seen on the previous frame, and keep the better match
                h = np.nonzero(~seen & prev_vis[idx])[0]
                if len(h):
                    p2, A2, z2, z02 = tpl.align(idx[h], img, prev_xy[idx[h]])
                    b = np.nan_to_num(z2, nan=-1.0) > np.nan_to_num(z[h], nan=-1.0)
                    start[h[b]], p[h[b]], A[h[b]] = prev_xy[idx[h[b]]], p2[b], A2[b]
                    z[h[b]], z0[h[b]] = z2[b], z02[b]
                d = np.linalg.norm(p - start, axis=1)
                # where the tracker says hidden, only an unmistakable match re-finds the point
                keep = np.isfinite(z) & (z >= np.where(seen, MIN_ZNCC, REFIND_ZNCC)) \
                    & (z >= np.nan_to_num(z0, nan=-1.0)) & (d <= gate) & np.isfinite(p).all(1) \
                    & np.isfinite(A).all((1, 2))
                xy[idx[keep], j] = p[keep]
                vis[idx[keep], j] = True
                tpl.A[idx[keep]] = A[keep]
                stats.moved += int((keep & seen).sum())
                stats.refound += int((keep & ~seen).sum())
                shifts.append(d[keep & seen])
            prev_xy, prev_vis = xy[:, j].copy(), vis[:, j].copy()
            tick()
        write(sl, t0, t1, xy.astype(np.float32), vis)
