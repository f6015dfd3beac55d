"""Depth of a static point from its reliable neighbours: a robust local surface in the query frame.

A track on a weakly textured surface (plain wall, sky-lit floor) drifts in the tracker, so its own
static fit (:mod:`.static`) or appearance sweep picks a wrong depth along its query ray; textured
points around it, whose depths are well determined, say where the surface is. For each query
pixel we take the reliable static points seen in its query frame (their projections through the
solved camera), the ``k`` nearest within ``radius_px``, and fit a plane to them as inverse depth
affine in the pixel coordinates, ``1/z = a u + b v + c`` (exact for a planar patch), by
iteratively reweighted least squares (Cauchy weights on the relative residual, Gaussian weights
on pixel distance), then intersect the query ray with it. Too few / collinear neighbours fall
back to their weighted median depth.

Coordinates: undistorted pixels (OpenCV), world frame of ``cam_to_world``; depth is distance
along the unit query ray from the query camera's centre (as in :func:`.static.ray_candidates`).
"""
from __future__ import annotations

import numpy as np

RADIUS_PX = 24.0     # neighbourhood radius in the query frame (px at the track file's resolution)
K_NEAREST = 16       # neighbours per query at most
MIN_NEIGHBOURS = 4   # fewer: no surface (NaN)
IRLS_ITERS = 4
CAUCHY_REL = 0.05    # Cauchy scale of the relative inverse-depth residual
ROWS = 4096          # queries fitted at once (memory: ~ROWS * k * 100 bytes)


def neighbour_depths(query: np.ndarray, c2w: np.ndarray, K: np.ndarray, anchors: np.ndarray,
                     anchor_seen: np.ndarray, anchor_ids: np.ndarray | None = None,
                     track_ids: np.ndarray | None = None, radius_px: float = RADIUS_PX,
                     k: int = K_NEAREST) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local-surface depth on each query ray.

    ``query`` (n, 3) ``[t, x, y]`` undistorted px; ``c2w`` (T, 4, 4), ``K`` (T, 3, 3);
    ``anchors`` (m, 3) world points of reliable static tracks; ``anchor_seen`` (m, T) bool, where
    each anchor is known to be visible (its observations agree with its point), so that hidden
    anchors behind a foreground surface are not used (or a function of the frame index giving
    that column, for work arrays on disk). ``anchor_ids`` / ``track_ids``: track ids
    of anchors and queries, so a track is never its own neighbour (None: no exclusion).

    Returns (depth (n,) along the unit query ray, NaN where no surface; spread (n,) robust
    relative scatter of the neighbours' inverse depth about the surface (MAD / |1/z|); count (n,)
    neighbours used).
    """
    from scipy.spatial import cKDTree

    n, T = len(query), len(c2w)
    depth = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    count = np.zeros(n, int)
    if n == 0 or len(anchors) < MIN_NEIGHBOURS:
        return depth, spread, count
    qt = np.clip(np.round(query[:, 0]).astype(int), 0, T - 1)
    for t in np.unique(qt):
        sel = np.flatnonzero(qt == t)
        a = np.flatnonzero(anchor_seen(t) if callable(anchor_seen) else anchor_seen[:, t])
        if len(a) < MIN_NEIGHBOURS:
            continue
        R, Ct = c2w[t, :3, :3], c2w[t, :3, 3]
        xc = (anchors[a] - Ct) @ R                                  # camera coordinates
        ok = xc[:, 2] > 1e-9
        a, xc = a[ok], xc[ok]
        if len(a) < MIN_NEIGHBOURS:
            continue
        uv = np.stack([K[t, 0, 0] * xc[:, 0] / xc[:, 2] + K[t, 0, 2],
                       K[t, 1, 1] * xc[:, 1] / xc[:, 2] + K[t, 1, 2]], 1)
        w_inv = 1.0 / xc[:, 2]
        kk = min(k + 1, len(a))
        tree = cKDTree(uv)
        for c0 in range(0, len(sel), ROWS):      # bounded (rows, k, 3) work arrays
            sc = sel[c0:c0 + ROWS]
            dist, nb = tree.query(query[sc, 1:3], k=kk, distance_upper_bound=radius_px)
            dist, nb = dist.reshape(len(sc), kk), nb.reshape(len(sc), kk)
            valid = nb < len(a)
            nbc = np.minimum(nb, len(a) - 1)
            if anchor_ids is not None and track_ids is not None:
                valid &= anchor_ids[a][nbc] != track_ids[sc][:, None]
            d_plane, sp, cnt = _robust_plane(uv[nbc] - query[sc, None, 1:3], w_inv[nbc], dist,
                                             valid, radius_px)
            # inverse depth at the query pixel -> distance along the ray: z |(xn, yn, 1)|
            xn = (query[sc, 1] - K[t, 0, 2]) / K[t, 0, 0]
            yn = (query[sc, 2] - K[t, 1, 2]) / K[t, 1, 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                d = np.where(d_plane > 0, np.sqrt(xn * xn + yn * yn + 1.0) / d_plane, np.nan)
            depth[sc], spread[sc], count[sc] = d, sp, cnt
    return depth, spread, count


def _robust_plane(duv: np.ndarray, w_inv: np.ndarray, dist: np.ndarray, valid: np.ndarray,
                  radius_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse depth at the origin of ``duv`` (n, k, 2) px offsets from the query pixel, from
    neighbours' inverse depths ``w_inv`` (n, k); ``valid`` (n, k) mask. Returns (inverse depth
    (n,), relative spread (n,), count (n,))."""
    n, k = w_inv.shape
    cnt = valid.sum(1)
    g = np.where(valid, np.exp(-0.5 * (np.where(valid, dist, 0) / (0.5 * radius_px)) ** 2), 0.0)
    med = _weighted_median(w_inv, g)
    med = np.where(np.isfinite(med), med, 1.0)       # rows without neighbours: masked below
    w_inv = np.where(valid, w_inv, 0.0)
    A = np.concatenate([duv / radius_px, np.ones((n, k, 1))], -1)    # (n, k, 3), scaled
    wt = g.copy()
    c = med.copy()
    coef = np.zeros((n, 3))
    coef[:, 2] = med
    for _ in range(IRLS_ITERS):
        Aw = A * wt[..., None]
        M = np.einsum("nki,nkj->nij", Aw, A) + 1e-6 * np.eye(3)
        b = np.einsum("nki,nk->ni", Aw, w_inv)
        # ill-conditioned (collinear or single-cluster neighbours): the plane's tilt is unknown
        ev = np.linalg.eigvalsh(M)
        cond_ok = ev[:, 0] > 1e-4 * ev[:, -1]
        sol = np.linalg.solve(M, b[..., None])[..., 0]
        coef = np.where(cond_ok[:, None], sol, np.stack([np.zeros(n), np.zeros(n), med], 1))
        r = (np.einsum("nki,ni->nk", A, coef) - w_inv) / np.maximum(np.abs(med), 1e-12)[:, None]
        wt = g / (1.0 + (np.nan_to_num(r, nan=1e3) / CAUCHY_REL) ** 2)
    c = coef[:, 2]
    r = np.abs(np.einsum("nki,ni->nk", A, coef) - w_inv) / np.maximum(np.abs(med), 1e-12)[:, None]
    spread = _weighted_median(np.where(valid, r, np.nan), valid.astype(float))
    few = cnt < MIN_NEIGHBOURS
    c = np.where(few, np.nan, c)
    spread = np.where(few, np.nan, spread)
    return c, spread, cnt


def _weighted_median(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise weighted median of ``x`` (n, k) with weights ``w`` (n, k) (0 / NaN ignored)."""
    w = np.where(np.isfinite(x), w, 0.0)
    xs = np.where(w > 0, x, np.inf)
    o = np.argsort(xs, 1)
    xs = np.take_along_axis(xs, o, 1)
    ws = np.take_along_axis(w, o, 1)
    cw = np.cumsum(ws, 1)
    tot = cw[:, -1:]
    i = np.argmax(cw >= 0.5 * tot, 1)
    m = xs[np.arange(len(x)), i]
    return np.where((tot[:, 0] > 0) & np.isfinite(m), m, np.nan)
