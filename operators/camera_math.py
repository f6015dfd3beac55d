"""Pure-numpy conversions between the track file's OpenCV conventions and Blender's.

No bpy here, so it is testable without Blender and cheap to import.

Conventions:
- Track-file pixels: OpenCV, x right, y down, the centre of the top-left pixel is (0, 0).
- Track-file cameras: camera-to-world, OpenCV camera axes (x right, y down, z forward).
- Blender cameras look down their local -Z with +Y up, so ``M_blender = cam_to_world @ diag(1,-1,-1,1)``.
- Blender's lens model (``sensor_fit='AUTO'``, square pixels): ``sensor_width`` spans the larger image
  side S = max(W, H); focal in pixels = ``lens / sensor_width * S``; ``shift_x``/``shift_y`` move the
  view window by that fraction of S (x right, y up). The view window's centre is the image centre,
  which in OpenCV pixel-centre coordinates is ((W-1)/2, (H-1)/2).
- Native Blender track markers: normalised frame coordinates, origin at the bottom-left *corner* of
  the frame, (1, 1) at the top-right corner.
"""
from __future__ import annotations

import numpy as np

#: OpenCV camera axes -> Blender camera axes (flip y and z), applied on the right of cam_to_world.
CV_TO_BLENDER_CAM = np.diag([1.0, -1.0, -1.0, 1.0])
DEFAULT_SENSOR_WIDTH_MM = 36.0


def blender_camera_matrices(cam_to_world: np.ndarray, world_scale: float = 1.0) -> np.ndarray:
    """(T,4,4) OpenCV camera-to-world -> Blender camera object world matrices.

    ``world_scale`` multiplies positions (track-file world units -> Blender units), e.g.
    ``1 / scene.unit_settings.scale_length`` when the track file is in metres.
    """
    m = np.asarray(cam_to_world, dtype=np.float64) @ CV_TO_BLENDER_CAM
    m = m.copy()
    m[..., :3, 3] *= world_scale
    return m


def lens_from_K(K: np.ndarray, width: int, height: int,
                sensor_width: float = DEFAULT_SENSOR_WIDTH_MM) -> dict[str, np.ndarray]:
    """Blender camera lens settings from pixel intrinsics (vectorised over leading axes).

    ``K`` is (...,3,3) for an image of ``width`` x ``height`` pixels. Returns arrays ``lens`` (mm),
    ``shift_x``, ``shift_y`` (fractions of max(W, H)) for ``sensor_fit='AUTO'`` and the given
    ``sensor_width``. Non-square pixels (fx != fy) are approximated by their mean focal.
    """
    K = np.asarray(K, dtype=np.float64)
    s = float(max(width, height))
    f = 0.5 * (K[..., 0, 0] + K[..., 1, 1])
    cx, cy = K[..., 0, 2], K[..., 1, 2]
    return {
        "lens": f * sensor_width / s,
        # Window moved right (shift_x > 0) puts the optical axis left of the image centre.
        "shift_x": ((width - 1) / 2.0 - cx) / s,
        # Window moved up (shift_y > 0) puts the optical axis below the centre (larger OpenCV y).
        "shift_y": (cy - (height - 1) / 2.0) / s,
    }


def K_from_lens(lens: float, shift_x: float, shift_y: float, width: int, height: int,
                sensor_width: float = DEFAULT_SENSOR_WIDTH_MM) -> np.ndarray:
    """Inverse of :func:`lens_from_K` (AUTO sensor fit, square pixels)."""
    s = float(max(width, height))
    f = lens / sensor_width * s
    return np.array([[f, 0, (width - 1) / 2.0 - shift_x * s],
                     [0, f, (height - 1) / 2.0 + shift_y * s],
                     [0, 0, 1]], dtype=np.float64)


def pixels_to_marker(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV pixel coordinates (...,2) -> Blender marker coordinates (normalised, origin bottom-left)."""
    xy = np.asarray(xy, dtype=np.float64)
    out = np.empty_like(xy)
    out[..., 0] = (xy[..., 0] + 0.5) / width
    out[..., 1] = 1.0 - (xy[..., 1] + 0.5) / height
    return out


def marker_to_pixels(co: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`pixels_to_marker`."""
    co = np.asarray(co, dtype=np.float64)
    out = np.empty_like(co)
    out[..., 0] = co[..., 0] * width - 0.5
    out[..., 1] = (1.0 - co[..., 1]) * height - 0.5
    return out


def principal_point_blender_pixels(K: np.ndarray, height: int) -> tuple[float, float]:
    """``MovieTrackingCamera.principal_point_pixels``: pixel-edge coordinates from the bottom-left."""
    return float(K[0, 2] + 0.5), float(height - (K[1, 2] + 0.5))


def fps_to_blender(fps: float) -> tuple[int, float]:
    """(render.fps, render.fps_base) such that fps / fps_base == ``fps``."""
    n = max(1, int(round(fps)))
    return n, n / float(fps)
