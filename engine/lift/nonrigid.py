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
    # fill hidden frames
    out = np.full((n, T, 3), np.nan)
    tt = np.arange(T)
    for i in range(n):
        v = np.flatnonzero(vis[i] & np.isfinite(X[i, :, 0]))
        if len(v) == 0:
            continue
        for k in range(3):
            out[i, :, k] = np.interp(tt, v, X[i, v, k])
    return out
