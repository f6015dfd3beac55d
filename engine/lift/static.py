"""Static points: one 3D point per track, triangulated once from all frames where it is seen."""
from __future__ import annotations

import numpy as np

from ..solve.camera import undistort_points
from ..solve.triangulate import (ray_directions, refine_points, reprojection_errors,
                                 triangulate_rays)


def undistort_tracks(xy: np.ndarray, vis: np.ndarray, K: np.ndarray,
                     dist: tuple[float, float, float] | None) -> np.ndarray:
    """Undistorted pixels (n, T, 2) (float64); unchanged when there is no distortion."""
    xy = np.where(vis[..., None], np.nan_to_num(np.asarray(xy, dtype=np.float64)), 0.0)
    if dist is None or not np.any(dist):
        return xy
    out = xy.copy()
    for t in range(xy.shape[1]):
        m = vis[:, t]
        if m.any():
            out[m, t] = undistort_points(xy[m, t], K[t], dist)
    return out


def undistort_queries(query: np.ndarray, K: np.ndarray,
                      dist: tuple[float, float, float] | None) -> np.ndarray:
    """Queries (n, 3) ``[t, x, y]`` as float64 (a copy), x, y undistorted with their query
    frame's intrinsics ``K[t]`` (``K`` (T, 3, 3)); unchanged when there is no distortion."""
    q = np.asarray(query, np.float64).copy()
    if dist is None or not np.any(dist):
        return q
    qt = np.clip(np.round(q[:, 0]).astype(int), 0, len(K) - 1)
    for t in np.unique(qt):
        m = qt == t
        q[m, 1:3] = undistort_points(q[m, 1:3], K[t], dist)
    return q


def lift_static(xy_u: np.ndarray, vis: np.ndarray, K: np.ndarray, c2w: np.ndarray, mode: str,
                radius: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """World points (n, 3) (NaN where < 2 views) and per-track RMS reprojection (px) for tracks
    treated as static. ``xy_u`` are undistorted pixels. In ``tripod`` mode the point is the mean
    viewing direction from the camera centre at distance ``radius``."""
    if mode == "tripod":
        d = ray_directions(xy_u, K, c2w)
        m = (d * vis[..., None]).sum(1)
        nrm = np.linalg.norm(m, axis=1, keepdims=True)
        X = np.where(nrm > 0, c2w[0, :3, 3] + radius * m / np.maximum(nrm, 1e-12), np.nan)
        X[vis.sum(1) < 1] = np.nan
    else:
        X, _ = triangulate_rays(xy_u, vis, K, c2w)
        X = refine_points(X, xy_u, vis, K, c2w, iters=3)
    _, rms = reprojection_errors(X, xy_u, vis, K, c2w)
    return X, rms
