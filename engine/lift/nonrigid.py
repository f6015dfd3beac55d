"""Non-rigid (or unexplained) tracks: a smooth, plausible 3D path.

Depth at each visible frame = median depth of the 8 static points nearest in the image at that
frame (the point is assumed to move on or near the surrounding static surface), smoothed over
time with a 5-frame running median; the pixel is back-projected at that depth. Hidden frames are
filled by linear interpolation in 3D between visible ones and held constant at the ends.
"""
from __future__ import annotations

import numpy as np


def lift_nonrigid(xy_u: np.ndarray, vis: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                  static_uvz_fn, default_depth: float) -> np.ndarray:
    """World paths (n, T, 3) for undistorted tracks ``xy_u`` (n, T, 2) visible where ``vis``."""
    from scipy.spatial import cKDTree

    n, T = vis.shape
    depth = np.full((n, T), np.nan)
    for t in range(T):
        m = vis[:, t]
        if not m.any():
            continue
        suv, sz = static_uvz_fn(t)
        if len(sz) >= 8:
            _, nn = cKDTree(suv).query(xy_u[m, t], k=8)
            depth[m, t] = np.median(sz[nn], axis=1)
        else:
            depth[m, t] = default_depth
    # temporal running median over visible frames
    # (rows without any depth in the window are left NaN rather than passed to nanmedian, whose
    # all-NaN warning could only be silenced by warnings.catch_warnings, which is not
    # thread-safe: the lift runs chunks in threads)
    sm = np.full_like(depth, np.nan)
    for t in range(T):
        win = depth[:, max(0, t - 2):min(T, t + 3)]
        rows = vis[:, t] & np.isfinite(win).any(1)
        if rows.any():
            sm[rows, t] = np.nanmedian(win[rows], axis=1)
    xn = (xy_u[..., 0] - K[:, 0, 2]) / K[:, 0, 0]
    yn = (xy_u[..., 1] - K[:, 1, 2]) / K[:, 1, 1]
    xc = np.stack([xn * sm, yn * sm, sm], -1)
    X = np.matmul(xc[..., None, :], np.swapaxes(c2w[:, :3, :3], 1, 2)[None])[..., 0, :] \
        + c2w[None, :, :3, 3]
    return fill_hidden(X, vis & np.isfinite(X[..., 0]))


def fill_hidden(X: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Paths (n, T, 3) with the frames not ``known`` (n, T) filled by linear interpolation
    between the known ones and held at the ends (NaN rows where none is known): per row what
    ``np.interp(arange(T), known frames, X[known frames])`` gives, bit for bit (the same
    formula, slope * (t - t0) + X[t0]), for all rows at once."""
    n, T = known.shape
    t = np.arange(T)
    # the known frame at or before each frame, and at or after it (-1 / T: none)
    prev = np.maximum.accumulate(np.where(known, t, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(known, t, T)[:, ::-1], axis=1)[:, ::-1]
    has = prev[:, -1] >= 0
    # before the first known frame: held at it (nxt[:, 0]); after the last: held at prev[:, -1]
    # (rows with none known point at frame 0 and come out NaN below)
    p = np.where(prev < 0, np.where(has, nxt[:, 0], 0)[:, None], prev)
    q = np.where(nxt >= T, np.where(has, prev[:, -1], 0)[:, None], nxt)
    r = np.arange(n)[:, None]
    x0, x1 = X[r, p], X[r, q]
    gap = (q - p).astype(np.float64)[..., None]
    between = (q > p)[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (x1 - x0) / np.where(between, gap, 1.0)
        out = np.where(between, slope * (t[None, :, None] - p[..., None]).astype(np.float64)
                       + x0, x0)
    out[~has] = np.nan
    return out
