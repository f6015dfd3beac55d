"""Camera conventions between Blender and the track file (pure numpy, no bpy).

Blender camera axes: x right, y up, looking down -z. OpenCV / track-file camera axes: x right,
y down, z forward, so ``R_cv = R_blender @ diag(1, -1, -1)``.

Pixels: Blender's render pixel (i, j) (j counted from the *bottom* row) covers the continuous
raster square [i, i+1] x [j, j+1]; its centre is OpenCV pixel ``x = i``, ``y = H - 1 - j``
(OpenCV: centre of the top-left pixel is (0, 0), y down).
"""
from __future__ import annotations

import numpy as np

#: Blender camera axes -> OpenCV camera axes (right-multiply a camera-to-world matrix).
BLENDER_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def blender_cam_to_cv(matrix_world: np.ndarray) -> np.ndarray:
    """Blender camera ``matrix_world`` (4x4, no scale) -> OpenCV ``cam_to_world`` (4x4)."""
    return np.asarray(matrix_world, dtype=np.float64) @ BLENDER_TO_CV


def k_from_projection(proj: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel intrinsics K (OpenCV pixel convention) from Blender's camera projection matrix.

    ``proj`` is ``camera.calc_matrix_camera(depsgraph, x=width, y=height)``: it maps Blender camera
    coordinates to clip space whose NDC [-1, 1] spans the image edges (continuous raster 0..W),
    so ``x_cv = W/2 * (ndc_x + 1) - 1/2`` and ``y_cv = H/2 * (1 - ndc_y) - 1/2``. Sensor size and
    fit, lens, shift and pixel aspect are all inside ``proj``.
    """
    p = np.asarray(proj, dtype=np.float64)
    if abs(p[3, 3]) > 1e-12:
        raise ValueError("orthographic cameras are not supported")
    w, h = float(width), float(height)
    k = np.eye(3)
    # ndc_x = P00*Xc/Zc - P02, ndc_y = -P11*Yc/Zc - P12 with (Xc, Yc, Zc) = (X, -Y, -Z).
    k[0, 0] = w / 2 * p[0, 0]
    k[0, 1] = -w / 2 * p[0, 1]
    k[0, 2] = w / 2 * (1 - p[0, 2]) - 0.5
    k[1, 1] = h / 2 * p[1, 1]
    k[1, 2] = h / 2 * (1 + p[1, 2]) - 0.5
    return k


def k_from_lens(lens_mm: float, sensor_width_mm: float, sensor_height_mm: float, sensor_fit: str,
                width: int, height: int, shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
    """K from Blender camera settings (square pixels); the closed form of :func:`k_from_projection`.

    ``sensor_fit`` is Blender's ``'AUTO'`` (sensor width spans the larger image side),
    ``'HORIZONTAL'`` (sensor width spans W) or ``'VERTICAL'`` (sensor height spans H). Shift is in
    units of the fitted side (Blender's convention).
    """
    fit = sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if width >= height else "VERTICAL"
        sensor_mm = sensor_width_mm
    else:
        sensor_mm = sensor_width_mm if fit == "HORIZONTAL" else sensor_height_mm
    side = width if fit == "HORIZONTAL" else height
    f = lens_mm / sensor_mm * side
    return np.array([[f, 0.0, (width - 1) / 2 - shift_x * side],
                     [0.0, f, (height - 1) / 2 + shift_y * side],
                     [0.0, 0.0, 1.0]])


def project(points_world: np.ndarray, cam_to_world: np.ndarray, k: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (..., 3) with one OpenCV camera; returns (xy (..., 2), z (...)).

    ``z`` is the depth along the camera's +z axis; xy is meaningless where z <= 0.
    """
    c2w = np.asarray(cam_to_world, dtype=np.float64)
    r, c = c2w[:3, :3], c2w[:3, 3]
    pc = (np.asarray(points_world, dtype=np.float64) - c) @ r  # = R^T (p - c)
    z = pc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = pc[..., :2] / z[..., None]
    kk = np.asarray(k, dtype=np.float64)
    x = kk[0, 0] * uv[..., 0] + kk[0, 1] * uv[..., 1] + kk[0, 2]
    y = kk[1, 1] * uv[..., 1] + kk[1, 2]
    return np.stack([x, y], axis=-1), z


def pixel_rays(xy: np.ndarray, cam_to_world: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through OpenCV pixels ``xy`` (M, 2): (origin (3,), directions (M, 3)).

    Directions are scaled so that their camera-z component is 1 (so a hit at parameter s has
    z-depth s).
    """
    kinv = np.linalg.inv(np.asarray(k, dtype=np.float64))
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    h = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
    d_cam = h @ kinv.T
    c2w = np.asarray(cam_to_world, dtype=np.float64)
    return c2w[:3, 3].copy(), d_cam @ c2w[:3, :3].T
