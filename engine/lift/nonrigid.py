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
    sm = depth.copy()
    for t in range(T):
        lo, hi = max(0, t - 2), min(T, t + 3)
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                sm[:, t] = np.where(vis[:, t], np.nanmedian(depth[:, lo:hi], axis=1), np.nan)
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
