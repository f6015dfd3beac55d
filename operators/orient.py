"""Orientation tools: floor (selected points or detected plane), origin, scale. They move only the origin."""
from __future__ import annotations

import math

import bpy
import numpy as np

from .blscene import to_matrix, scene_extent, ensure_root


def camera_centres(data, scale: float) -> np.ndarray:
    return np.asarray(data.cam_to_world[:, :3, 3], np.float64) * scale


def floor_matrix(points: np.ndarray, up_hint: np.ndarray) -> np.ndarray:
    """World correction (4x4) putting the plane through ``points`` (M>=3, origin-local coords) at
    z = 0 with +z on the side of ``up_hint`` (e.g. the cameras), origin at the points' centroid."""
    P = np.asarray(points, np.float64)
    c = P.mean(0)
    _, _, vt = np.linalg.svd(P - c)
    n = vt[2]
    if np.dot(np.asarray(up_hint) - c, n) < 0:
        n = -n
    x = vt[0] - np.dot(vt[0], n) * n
    x /= np.linalg.norm(x)
    y = np.cross(n, x)
    R = np.stack([x, y, n])  # rows: new axes in old coordinates
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = -R @ c
    return M


def detect_ground_plane(data, scale: float, iters: int = 300, tol_frac: float = 0.01,
                        seed: int = 0) -> np.ndarray:
    """Static 3D points on the dominant plane roughly perpendicular to the cameras' up (RANSAC).

    Returns (M,3) inlier points (origin-local Blender units)."""
    step = max(1, data.n_tracks // 20000)
    q_t = np.asarray(data.query[::step, 0]).astype(int)
    X = np.asarray(data.tracks_3d[::step], np.float64)[np.arange(len(q_t)), q_t] * scale
    keep = np.isfinite(X).all(1)
    if data.group is not None:
        keep &= np.asarray(data.group[::step]) < 0
    X = X[keep]
    if len(X) < 3:
        raise ValueError("not enough static 3D points to find a ground plane")
    up = -np.asarray(data.cam_to_world[:, :3, 1], np.float64).mean(0)  # OpenCV y is down
    up /= np.linalg.norm(up)
    tol = tol_frac * scene_extent(data, scale)
    rng = np.random.default_rng(seed)
    best = np.zeros(len(X), bool)
    for _ in range(iters):
        a, b, c = X[rng.choice(len(X), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n /= np.linalg.norm(n)
        if abs(np.dot(n, up)) < math.cos(math.radians(30)):
            continue
        inl = np.abs((X - a) @ n) < tol
        if inl.sum() > best.sum():
            best = inl
    if best.sum() < 3:
        raise ValueError("no ground plane found among the static points")
    return X[best]


def apply_world_correction(root: bpy.types.Object, M: np.ndarray) -> None:
    """Move everything under the origin by the world-space similarity ``M``: a point at world
    position p ends up at ``M @ p``. Keyframes are untouched."""
    root.matrix_world = to_matrix(M) @ root.matrix_world


def set_floor(scene: bpy.types.Scene, points_world: np.ndarray, up_world: np.ndarray) -> None:
    """Rotate/translate the origin so the plane through ``points_world`` (M>=3, current world
    coordinates) becomes the floor z = 0, with +z towards ``up_world`` (e.g. the cameras)."""
    apply_world_correction(ensure_root(scene), floor_matrix(points_world, up_world))


def local_to_world(scene: bpy.types.Scene, points_local: np.ndarray) -> np.ndarray:
    """Origin-local coordinates (keyframe space) -> current world coordinates."""
    Rw = np.asarray(ensure_root(scene).matrix_world, np.float64)
    P = np.asarray(points_local, np.float64)
    return P @ Rw[:3, :3].T + Rw[:3, 3]


def set_origin(scene: bpy.types.Scene, point_world: np.ndarray) -> None:
    """Translate the origin so ``point_world`` (current world coordinates) becomes (0, 0, 0)."""
    M = np.eye(4)
    M[:3, 3] = -np.asarray(point_world, np.float64)
    apply_world_correction(ensure_root(scene), M)


def set_scale(scene: bpy.types.Scene, p1_world: np.ndarray, p2_world: np.ndarray, distance: float) -> None:
    """Scale about the world origin so the two points end up ``distance`` Blender units apart."""
    d = float(np.linalg.norm(np.asarray(p2_world, np.float64) - np.asarray(p1_world, np.float64)))
    if d <= 0 or distance <= 0:
        raise ValueError("the two points coincide or the distance is not positive")
    M = np.diag([distance / d] * 3 + [1.0])
    apply_world_correction(ensure_root(scene), M)
