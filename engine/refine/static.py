"""Robust static fit of one track: its 3D point lies on the viewing ray of its query pixel.

The query pixel is exact by construction (the user / grid put the point there), so a static
point is fixed by one unknown, its depth along that ray. We scan depths (log-spaced over the
scene's depth range), score each by a truncated quadratic of the tracker's visible observations
(so frames where the tracker drifted or jumped do not pull the point), pick the best and polish
it on the inlier frames. Vectorised over a chunk of tracks.

Coordinates: undistorted pixels of the footage (OpenCV), world frame of ``cam_to_world``.
"""
from __future__ import annotations

import numpy as np

from ..solve.camera import to_cameras
from ..solve.triangulate import ray_directions, refine_points


def in_image(uv: np.ndarray, W: int, H: int) -> np.ndarray:
    """(...) bool: pixel positions ``uv`` (..., 2) inside a W x H image (OpenCV: pixel centres
    0..W-1, so the borders are at -0.5 and W - 0.5); NaN positions are outside."""
    return (uv[..., 0] > -0.5) & (uv[..., 0] < W - 0.5) \
        & (uv[..., 1] > -0.5) & (uv[..., 1] < H - 0.5)


def _project_many(X: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project points ``X`` (..., 3) through every camera: (..., T, 2) px (NaN behind a camera)
    and (..., T) depth."""
    if X.ndim > 2:
        # one block of the second axis at a time (e.g. one depth of every ray): its
        # temporaries stay in the CPU cache (about 2x faster than one pass, the same bits)
        T = len(c2w)
        uv = np.empty(X.shape[:-1] + (T, 2))
        z = np.empty(X.shape[:-1] + (T,))
        for j in range(X.shape[1]):
            uv[:, j], z[:, j] = _project_many(X[:, j], c2w, K)
        return uv, z
    xc = to_cameras(X, c2w)
    z = xc[..., 2]
    inv = np.full(z.shape, np.nan)
    np.divide(1.0, z, out=inv, where=z > 1e-9)
    uv = np.empty(z.shape + (2,))
    for i in (0, 1):    # written in place: these arrays are the refine stage's largest
        np.multiply(xc[..., i], inv, out=uv[..., i])
        uv[..., i] *= K[:, i, i]
        uv[..., i] += K[:, i, 2]
    return uv, z


def query_rays(query: np.ndarray, c2w: np.ndarray, K: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Each query pixel's viewing ray in the world: (origins (n, 3), the query cameras'
    centres; unit directions (n, 3)). ``query`` (n, 3) ``[t, x, y]`` undistorted px."""
    n, T = len(query), len(c2w)
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, T - 1)
    qxy = np.zeros((n, T, 2))
    qxy[np.arange(n), qt] = query[:, 1:3]
    rays = ray_directions(qxy, K, c2w)[np.arange(n), qt]          # (n, 3) unit
    return c2w[qt, :3, 3].astype(np.float64), rays


def ray_line_distances(xy_u: np.ndarray, query: np.ndarray, c2w: np.ndarray, K: np.ndarray
                       ) -> np.ndarray:
    """(n, T) px distance of each observation ``xy_u`` (n, T, 2) (undistorted px, NaN where
    not seen) to the image line of its track's query ray (:func:`query_rays` of ``query``
    (n, 3) ``[t, x, y]``) in every camera: no point of the ray projects nearer, so a static fit
    on that ray (:func:`fit_static`, before its polish) has no inlier frame where this
    distance is ``tau`` or more. 0 in the query frame and wherever the line is undefined (the
    ray through that camera's centre); NaN where the observation is."""
    n, T = len(query), len(c2w)
    C, rays = query_rays(query, c2w, K)
    rot = np.array(c2w, np.float64)
    rot[:, :3, 3] = 0
    a = to_cameras(C, c2w)                                          # ray origin, (n, T, 3)
    b = to_cameras(rays, rot)                                       # its direction
    a = np.einsum("tij,ntj->nti", K, a)
    b = np.einsum("tij,ntj->nti", K, b)
    line = np.cross(a, b)                                           # homogeneous image line
    norm = np.hypot(line[..., 0], line[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.abs(line[..., 0] * xy_u[..., 0] + line[..., 1] * xy_u[..., 1] + line[..., 2]) \
            / norm
    degenerate = norm <= 1e-9 * np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, T - 1)
    degenerate[np.arange(n), qt] = True
    d[degenerate] = 0.0
    d[np.isnan(xy_u).any(-1)] = np.nan
    return d


def ray_depths(depth_range: tuple[float, float], mode: str = "general", radius: float = 100.0,
               n_depths: int = 48) -> np.ndarray:
    """Candidate depths (D,) along a query ray: log-spaced over ``depth_range``; one,
    ``radius``, for a tripod shot."""
    if mode == "tripod":
        return np.array([radius])
    near, far = depth_range
    return np.geomspace(max(near, 1e-6), max(far, near * 1.01), n_depths)


def ray_candidates(query: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                   depth_range: tuple[float, float], mode: str = "general", radius: float = 100.0,
                   n_depths: int = 48):
    """Candidate static points on each query ray: (X (n, D, 3), depths (D,), ray origins (n, 3),
    unit ray directions (n, 3)) (:func:`query_rays`, :func:`ray_depths`)."""
    C, rays = query_rays(query, c2w, K)
    depths = ray_depths(depth_range, mode, radius, n_depths)
    X = C[:, None] + depths[None, :, None] * rays[:, None]          # (n, D, 3)
    return X, depths, C, rays


def _scan_cost(uv: np.ndarray, obs: np.ndarray, cap: float) -> np.ndarray:
    """Truncated squared distance (n, D) of candidate projections ``uv`` (n, D, T, 2) to the
    observations ``obs`` (n, T, 2), summed over frames. A candidate behind a camera (NaN) where
    the track is seen counts as a miss (``cap``); frames where the track is not seen (NaN
    observation) add ``cap`` to every candidate alike, which leaves the argmin unchanged. In
    place on ``uv``'s memory: the (n, D, T) arrays are the refine stage's largest."""
    d = uv[..., 0]
    d -= obs[:, None, :, 0]
    d *= d
    e = uv[..., 1]
    e -= obs[:, None, :, 1]
    e *= e
    d += e
    return np.fmin(d, cap).sum(-1)


def _ray_costs(C: np.ndarray, rays: np.ndarray, depths: np.ndarray, c2w: np.ndarray,
               K: np.ndarray, obs: np.ndarray, cap: float) -> np.ndarray:
    """:func:`_scan_cost` (n, D) of the points at ``depths`` (n, D) along each ray (origins ``C``,
    unit directions ``rays``, (n, 3)), one depth at a time: each depth's (n, T) arrays stay in
    the CPU cache, where the whole (n, D, T) set would stream through memory several times
    (2.7x slower, the same values bit for bit)."""
    cost = np.empty(depths.shape)
    for j in range(depths.shape[1]):
        uv, _ = _project_many(C + depths[:, j, None] * rays, c2w, K)
        cost[:, j] = _scan_cost(uv[:, None], obs, cap)[:, 0]
    return cost


def _best_depth(cost: np.ndarray, cap: float) -> np.ndarray:
    """Index (n,) of the lowest cost per row of ``cost`` (n, D), depths ascending; among costs
    equal to it up to rounding the farthest depth. Such ties are a ray through a nodal camera
    path, which projects alike at every depth: the far end is the nodal answer (a tripod solve
    puts its points far away too), and the tie must not be decided by the last bits of the
    projection arithmetic."""
    tie = cost <= cost.min(1, keepdims=True) + 1e-9 * cap
    return cost.shape[1] - 1 - np.argmax(tie[:, ::-1], axis=1)


def fit_static(xy_u: np.ndarray, vis: np.ndarray, query: np.ndarray, c2w: np.ndarray,
               K: np.ndarray, depth_range: tuple[float, float], tau: float, mode: str = "general",
               radius: float = 100.0, n_depths: int = 48
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best static point per track on its query ray.

    ``xy_u`` (n, T, 2) undistorted tracker pixels, ``vis`` (n, T) tracker visibility, ``query``
    (n, 3) ``[t, x, y]`` (x, y undistorted), ``c2w`` (T, 4, 4), ``K`` (T, 3, 3),
    ``depth_range`` (near, far) distances along the ray in world units, ``tau`` px inlier
    radius. Tripod mode: the point sits at ``radius`` on the ray (depth is unobservable).

    Returns (X (n, 3) world points, inliers (n, T) bool: visible observations within ``tau``,
    residual (n, T) px distance of every observation to the projection, NaN where not visible).
    """
    n, T = vis.shape
    obs = np.where(vis[..., None], np.nan_to_num(xy_u), np.nan)
    C, rays = query_rays(query, c2w, K)
    depths = ray_depths(depth_range, mode, radius, n_depths)
    best = _best_depth(_ray_costs(C, rays, np.broadcast_to(depths, (n, len(depths))), c2w, K,
                                  obs, tau * tau), tau * tau)      # (n,) of D depths
    d = depths[best]
    if len(depths) > 1:
        # polish: finer scan between the neighbouring coarse depths, inlier frames only
        lo = depths[np.maximum(best - 1, 0)]
        hi = depths[np.minimum(best + 1, len(depths) - 1)]
        fine = np.geomspace(lo, hi, 17, axis=1)                     # (n, 17)
        capf = (0.5 * tau) ** 2
        d = fine[np.arange(n), _best_depth(_ray_costs(C, rays, fine, c2w, K, obs, capf), capf)]
    Xb = C + d[:, None] * rays

    def residuals(X):
        uvb, _ = _project_many(X, c2w, K)
        r = np.linalg.norm(uvb - obs, axis=-1)
        return np.where(vis, np.where(np.isfinite(r), r, np.inf), np.nan)

    res = residuals(Xb)
    inl = vis & (res < tau)
    if mode != "tripod":
        # free 3D Gauss-Newton on the inlier frames (the scan is coarse and the solved query
        # camera is not exact either); kept only where it lowers the inlier error
        Xr = refine_points(Xb, np.nan_to_num(xy_u), inl, K, c2w, iters=3)
        res_r = residuals(Xr)
        better = np.nansum(np.where(inl, np.minimum(res_r, tau) ** 2, 0), 1) < \
            np.nansum(np.where(inl, res ** 2, 0), 1)
        better &= np.isfinite(Xr).all(1)
        Xb = np.where(better[:, None], Xr, Xb)
        res = np.where(better[:, None], res_r, res)
        inl = vis & (res < tau)
    return Xb, inl, res
