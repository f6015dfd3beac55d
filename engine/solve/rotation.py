"""Rotation-only (tripod / nodal) camera solve.

Every frame shares one camera centre (the world origin); frame t is a rotation ``R_t`` and a
focal ``f_t`` (shared unless zooming). Scene points are directions, placed on a sphere of radius
``SPHERE_RADIUS`` world units for output. Initial rotations come from frame-to-frame homographies
``H = K_t R_rel K_{t-1}^-1``; the focal from the scan that makes ``K^-1 H K`` most orthonormal over
wide pairs; then a robust bundle adjustment on rotations, focal(s), directions (and distortion).
"""
from __future__ import annotations

import numpy as np

from .bundle import BAState, bundle_adjust
from .camera import rotvec

SPHERE_RADIUS = 100.0


def _orth_err(Hm: np.ndarray, f1: float, f2: float, cx: float, cy: float) -> float:
    K1 = np.array([[f1, 0, cx], [0, f1, cy], [0, 0, 1]])
    K2i = np.array([[1 / f2, 0, -cx / f2], [0, 1 / f2, -cy / f2], [0, 0, 1]])
    R = K2i @ Hm @ K1
    R = R / np.cbrt(np.linalg.det(R))
    return float(np.linalg.norm(R.T @ R - np.eye(3)))


def _to_rot(Hm, f1, f2, cx, cy):
    K1 = np.array([[f1, 0, cx], [0, f1, cy], [0, 0, 1]])
    K2i = np.array([[1 / f2, 0, -cx / f2], [0, 1 / f2, -cy / f2], [0, 0, 1]])
    R = K2i @ Hm @ K1
    U, _, Vt = np.linalg.svd(R)
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = -R
    return R


def _homography(xy, vis, a, b, thresh):
    from .segment import find_homography

    m = vis[:, a] & vis[:, b]
    if m.sum() < 8:
        return None
    Hm, _ = find_homography(xy[m, a].astype(np.float64), xy[m, b].astype(np.float64), thresh)
    return Hm


def solve_rotation(xy: np.ndarray, vis: np.ndarray, image_size: tuple[int, int],
                   cx: float, cy: float, focal: float | None, per_frame_focal: bool,
                   n_dist: int = 0, sigma: float = 0.5) -> dict:
    """Solve a nodal shot from tracks ``xy`` (n, T, 2) / ``vis`` (n, T) (static tracks only).

    Returns dict: ``rvecs`` (T, 3) world->camera, ``focals`` (T,), ``dirs`` (n, 3) unit world
    directions (NaN for unusable tracks), ``dist`` (2,), ``residuals`` per observation,
    ``median``/``rms`` px, ``obs`` (cam, pt) indices.
    """
    T = vis.shape[1]
    size = float(max(image_size))
    thresh = max(1.5, 3 * sigma)
    Hs = [_homography(xy, vis, t - 1, t, thresh) for t in range(1, T)]
    if any(h is None for h in Hs):
        raise RuntimeError("too few tracks shared between consecutive frames for a rotation solve")
    # focal scan on wide pairs (small rotations barely constrain f)
    if focal is None:
        wide = []
        for a in np.linspace(0, T - 1, 5).round().astype(int):
            for b in range(T - 1, a, -max(1, T // 6)):
                Hm = _homography(xy, vis, a, b, thresh)
                if Hm is not None:
                    wide.append(Hm)
                if len(wide) > 12:
                    break
        fs = size * np.geomspace(0.3, 6, 150)
        cost = [sum(_orth_err(Hm, f, f, cx, cy) for Hm in wide) for f in fs]
        f0 = float(fs[int(np.argmin(cost))])
    else:
        f0 = float(focal)
    focals = np.full(T, f0)
    if per_frame_focal and focal is None:
        ratios = np.geomspace(0.85, 1.18, 67)
        for t in range(1, T):
            c = [_orth_err(Hs[t - 1], focals[t - 1], focals[t - 1] * r, cx, cy) for r in ratios]
            focals[t] = focals[t - 1] * ratios[int(np.argmin(c))]
    Rs = np.zeros((T, 3, 3))
    Rs[0] = np.eye(3)
    for t in range(1, T):
        Rs[t] = _to_rot(Hs[t - 1], focals[t - 1], focals[t], cx, cy) @ Rs[t - 1]
    # directions: mean world ray over the frames a track is seen
    n = xy.shape[0]
    rays = np.zeros((n, 3))
    for t in range(T):
        m = vis[:, t]
        b = np.c_[(xy[m, t] - [cx, cy]) / focals[t], np.ones(m.sum())]
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        rays[m] += b @ Rs[t]           # R_t^T b  (world direction)
    ok = vis.sum(1) >= 2
    dirs = np.full((n, 3), np.nan)
    dirs[ok] = rays[ok] / np.linalg.norm(rays[ok], axis=1, keepdims=True)
    cam, pt = np.nonzero(vis[ok].T)
    pts_idx = np.flatnonzero(ok)
    uv = xy[pts_idx[pt], cam].astype(np.float64)
    st = BAState(rvecs=rotvec(Rs), ts=np.zeros((T, 3)), focals=focals.copy() if per_frame_focal else np.array([f0]),
                 focal_idx=np.arange(T) if per_frame_focal else np.zeros(T, int),
                 points=dirs[ok], cx=cx, cy=cy)
    refine = focal is None
    info = None
    keep = np.ones(len(cam), bool)
    for rnd in range(3):
        st, info = bundle_adjust(st, cam[keep], pt[keep], uv[keep], rotation_only=True,
                                 refine_focal=refine, n_dist=n_dist if rnd > 0 else 0,
                                 f_scale=max(1.0, 2 * sigma), max_nfev=50 if rnd < 2 else 100,
                                 focal_smooth=20.0 if per_frame_focal else 0.0)
        # drop gross outliers (tracks that slid) and refit
        from .bundle import project_obs
        pr, _ = project_obs(st, cam, pt)
        err = np.linalg.norm(pr - uv, axis=1)
        thr = max(2.5, 4 * 1.4826 * np.median(err[keep]))
        new_keep = err < thr
        if rnd > 0 and (new_keep == keep).all():
            break
        keep = new_keep
    pr, _ = project_obs(st, cam, pt)
    err = np.linalg.norm(pr - uv, axis=1)
    dirs[ok] = st.points
    return {"rvecs": st.rvecs, "focals": st.focals[st.focal_idx], "dirs": dirs, "dist": st.dist,
            "residuals": err, "inlier_obs": keep, "median": float(np.median(err[keep])),
            "rms": float(np.sqrt(np.mean(err[keep] ** 2)))}
