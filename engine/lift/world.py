"""The world frame the solve is delivered in.

Axes: Z up (Blender's convention), right-handed; +Y is the first camera's viewing direction
projected onto the ground, +X to its right.

- General motion: "up" is the normal of the dominant ground plane when one is found (a RANSAC
  plane through the static points that holds >= 15 % of them and faces the cameras' "up", i.e.
  is seen from above); otherwise the mean of the cameras' up vectors (-y camera axis).
  Origin: the point of the ground plane below the first camera (or the first camera centre when no
  plane). Scale: the first camera's height above the ground plane is ``CAMERA_HEIGHT`` units
  (about eye height in metres); without a plane, the median depth of the static points seen in
  the first frame is ``DEPTH_UNITS`` units.
- Tripod: the camera centre is the origin, up is the mean camera up vector, scale 1 (points lie
  on the solver's sphere of radius 100).
"""
from __future__ import annotations

import numpy as np

CAMERA_HEIGHT = 1.6
DEPTH_UNITS = 10.0


def fit_ground_plane(X: np.ndarray, cam_up: np.ndarray, cam_centres: np.ndarray,
                     rng: np.random.Generator | None = None, iters: int = 400,
                     min_frac: float = 0.15) -> tuple[np.ndarray, float, float] | None:
    """RANSAC plane ``n . x = d`` (unit n pointing towards the cameras) among static points.

    Only planes whose normal is within 60 deg of ``cam_up`` are candidates. Returns
    (n, d, inlier fraction) or None.
    """
    X = X[np.isfinite(X).all(1)]
    if len(X) < 30:
        return None
    rng = rng or np.random.default_rng(0)
    extent = np.median(np.linalg.norm(X - np.median(X, 0), axis=1))
    thr = 0.02 * extent
    best = None
    for _ in range(iters):
        p = X[rng.choice(len(X), 3, replace=False)]
        n = np.cross(p[1] - p[0], p[2] - p[0])
        nn = np.linalg.norm(n)
        if nn < 1e-12:
            continue
        n /= nn
        if np.dot(n, cam_up) < 0:
            n = -n
        if np.dot(n, cam_up) < 0.5:
            continue
        d = float(n @ p[0])
        inl = np.abs(X @ n - d) < thr
        if best is None or inl.sum() > best[2].sum():
            best = (n, d, inl)
    if best is None or best[2].mean() < min_frac:
        return None
    n, d, inl = best
    frac = float(inl.mean())
    # least-squares refits on inliers, tightening the band (objects standing on the plane
    # contribute near-plane points that tilt a loose fit)
    for band in (thr, thr / 4):
        inl = np.abs(X @ n - d) < band
        if inl.sum() < 3:
            break
        P = X[inl]
        c = P.mean(0)
        _, _, Vt = np.linalg.svd(P - c)
        n = Vt[2] if np.dot(Vt[2], n) > 0 else -Vt[2]
        d = float(n @ c)
    # the cameras must be above it
    if np.median(cam_centres @ n - d) <= 0:
        return None
    return n, d, frac


def choose_world(c2w: np.ndarray, static_points: np.ndarray, mode: str,
                 K0: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Similarity ``S`` (4, 4) mapping solver coordinates to the world frame, and its description.

    ``X_world = S[:3, :3] @ X + S[:3, 3]`` (``S[:3, :3]`` = scale x rotation).
    """
    cam_up = -c2w[:, :3, 1].mean(0)
    cam_up /= np.linalg.norm(cam_up)
    C = c2w[:, :3, 3]
    info: dict = {"up_axis": "+Z", "forward_axis": "+Y (first camera, horizontal)"}
    plane = None
    if mode != "tripod":
        plane = fit_ground_plane(static_points, cam_up, C)
    if plane is not None:
        up, d, frac = plane
        info.update(up_from="ground plane", ground_inlier_fraction=round(frac, 3))
    else:
        up = cam_up
        info["up_from"] = "mean camera up vector" if mode != "tripod" else "tripod: mean camera up"
    fwd = c2w[0, :3, 2] - np.dot(c2w[0, :3, 2], up) * up
    if np.linalg.norm(fwd) < 1e-6:  # looking straight down/up: use the image's up direction
        fwd = -c2w[0, :3, 1] - np.dot(-c2w[0, :3, 1], up) * up
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, up)
    R = np.stack([x, fwd, up])          # rows: world axes expressed in solver coordinates
    if mode == "tripod":
        s, origin = 1.0, C[0]
        info.update(origin="camera centre", scale="1 (points on a sphere of radius 100)")
    elif plane is not None:
        h = float(C[0] @ up - d)
        s = CAMERA_HEIGHT / max(h, 1e-9)
        origin = C[0] - h * up
        info.update(origin="ground point below the first camera",
                    scale=f"first camera height above ground = {CAMERA_HEIGHT} units")
    else:
        Xs = static_points[np.isfinite(static_points).all(1)]
        depth = (Xs - C[0]) @ c2w[0, :3, 2]
        depth = depth[depth > 0]
        s = DEPTH_UNITS / float(np.median(depth)) if len(depth) else 1.0
        origin = C[0]
        info.update(origin="first camera centre",
                    scale=f"median depth of static points in the first frame = {DEPTH_UNITS} units")
    S = np.eye(4)
    S[:3, :3] = s * R
    S[:3, 3] = -s * R @ origin
    info["solver_to_world"] = S.tolist()
    return S, info


def apply_to_cameras(S: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world poses in the new frame (rotation part stays orthonormal)."""
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    R = S[:3, :3] / s
    out = c2w.copy()
    out[:, :3, :3] = np.einsum("ij,tjk->tik", R, c2w[:, :3, :3])
    out[:, :3, 3] = c2w[:, :3, 3] @ S[:3, :3].T + S[:3, 3]
    return out


def apply_to_points(S: np.ndarray, X: np.ndarray) -> np.ndarray:
    return X @ S[:3, :3].T + S[:3, 3]
