"""Robust rigid (6-DOF) motion of a surface region from its 3D tracks. Pure numpy, no bpy.

Used by Attach to Surface: the region's tracks give, per frame, correspondences between their 3D
positions at a reference frame and at that frame; a Kabsch fit with iteratively re-weighted
least squares (Huber-like weights, hard rejection of gross outliers) gives the rotation and
translation. Hidden or unknown (NaN) points are simply left out of that frame's fit.
"""
from __future__ import annotations

import numpy as np


def kabsch(P: np.ndarray, Q: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares rotation R and translation t with ``Q ≈ R @ P + t``.

    ``P``, ``Q``: (M,3) corresponding points; ``w``: (M,) non-negative weights.
    """
    P = np.asarray(P, np.float64)
    Q = np.asarray(Q, np.float64)
    w = np.ones(len(P)) if w is None else np.asarray(w, np.float64)
    ws = w.sum()
    if ws <= 0:
        raise ValueError("all weights are zero")
    pc = (w[:, None] * P).sum(0) / ws
    qc = (w[:, None] * Q).sum(0) / ws
    H = ((P - pc) * w[:, None]).T @ (Q - qc)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    return R, qc - R @ pc


def robust_kabsch(P: np.ndarray, Q: np.ndarray, iters: int = 8,
                  min_points: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Outlier-robust :func:`kabsch`. Returns (R, t, inlier mask) or None if < ``min_points``.

    Residual scale from the median absolute residual; points beyond 3 robust sigmas get weight 0,
    the rest Huber weights, re-fitted ``iters`` times.
    """
    n = len(P)
    if n < min_points:
        return None
    # Start from the least-median-of-squares of a few random minimal subsets, so that up to
    # ~40% gross outliers cannot drag the first estimate.
    rng = np.random.default_rng(0)
    best = kabsch(P, Q)
    best_med = np.median(np.linalg.norm(Q - (P @ best[0].T + best[1]), axis=1))
    if n >= 6:
        for _ in range(min(64, 8 * n)):
            idx = rng.choice(n, 3, replace=False)
            try:
                R, t = kabsch(P[idx], Q[idx])
            except np.linalg.LinAlgError:
                continue
            med = np.median(np.linalg.norm(Q - (P @ R.T + t), axis=1))
            if med < best_med:
                best, best_med = (R, t), med
    R, t = best
    w = np.ones(n)
    for _ in range(iters):
        r = np.linalg.norm(Q - (P @ R.T + t), axis=1)
        sigma = 1.4826 * np.median(r) + 1e-12
        k = 1.345 * sigma
        w = np.where(r <= k, 1.0, k / np.maximum(r, 1e-300))
        w[r > 3.0 * sigma + 1e-9] = 0.0
        if (w > 0).sum() < min_points:
            break
        R, t = kabsch(P, Q, w)
    return R, t, w > 0


def region_motion(tracks_3d: np.ndarray, visible: np.ndarray, ref_t: int,
                  min_points: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame rigid motion of a region relative to frame ``ref_t``.

    ``tracks_3d`` (M,T,3) and ``visible`` (M,T) of the region's tracks. Returns ``(A, ok)``:
    ``A`` (T,4,4) with ``X_t ≈ A[t] @ X_ref`` (homogeneous), ``ok`` (T,) frames actually fitted;
    other frames hold the nearest fitted frame's motion (identity if none was fitted).
    """
    X = np.asarray(tracks_3d, np.float64)
    vis = np.asarray(visible, bool) & np.isfinite(X).all(-1)
    M, T = vis.shape
    P_all = X[:, ref_t]
    ref_ok = np.isfinite(P_all).all(-1)
    A = np.tile(np.eye(4), (T, 1, 1))
    ok = np.zeros(T, bool)
    for t in range(T):
        m = vis[:, t] & ref_ok
        if m.sum() < min_points:
            continue
        fit = robust_kabsch(P_all[m], X[m, t], min_points=min_points)
        if fit is None:
            continue
        A[t, :3, :3], A[t, :3, 3] = fit[0], fit[1]
        ok[t] = True
    if ok.any() and not ok.all():
        idx = np.flatnonzero(ok)
        nearest = idx[np.abs(np.arange(T)[:, None] - idx[None, :]).argmin(1)]
        A = A[nearest]
    return A, ok
