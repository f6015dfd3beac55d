"""Deterministic camera and object trajectories (pure numpy, world frame = Blender world, z up, metres).

Every function takes a ``numpy.random.Generator`` and the frame times (seconds) and returns
per-frame arrays; the scene builder keys them frame by frame into Blender.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CameraPath:
    """Per-frame camera: ``location`` (T, 3), ``rotation`` (T, 3, 3) Blender camera-to-world
    rotation (camera looks down its -z, +y up), ``lens`` (T,) focal length in mm."""

    location: np.ndarray
    rotation: np.ndarray
    lens: np.ndarray


@dataclass
class RigidPath:
    """Per-frame rigid motion: ``location`` (T, 3) and unit quaternions ``quat`` (T, 4) (w, x, y, z)."""

    location: np.ndarray
    quat: np.ndarray


def smooth_noise(rng: np.random.Generator, times: np.ndarray, dims: int, amplitude: float,
                 freqs: tuple[float, float] = (0.4, 3.0), n_terms: int = 4) -> np.ndarray:
    """Band-limited shake: a sum of sinusoids with random frequencies/phases, (T, dims).

    Each dimension has RMS of about ``amplitude``.
    """
    out = np.zeros((len(times), dims))
    for d in range(dims):
        f = rng.uniform(*freqs, n_terms)
        ph = rng.uniform(0, 2 * np.pi, n_terms)
        a = rng.uniform(0.5, 1.0, n_terms)
        a *= amplitude * np.sqrt(2.0) / np.sqrt((a ** 2).sum())
        out[:, d] = (a[None] * np.sin(2 * np.pi * f[None] * times[:, None] + ph[None])).sum(1)
    return out


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Blender camera rotation (3x3, columns = camera x, y, z in world) looking from eye to target."""
    f = target - eye
    f = f / np.linalg.norm(f)
    x = np.cross(f, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    z = -f
    y = np.cross(z, x)
    r = np.stack([x, y, z], axis=1)
    return r @ axis_angle([0.0, 0.0, 1.0], roll)


def axis_angle(axis, angle: float) -> np.ndarray:
    """Rotation matrix about ``axis`` by ``angle`` radians (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def euler_small(rx: float, ry: float, rz: float) -> np.ndarray:
    return axis_angle([1, 0, 0], rx) @ axis_angle([0, 1, 0], ry) @ axis_angle([0, 0, 1], rz)


def _ease(s: np.ndarray) -> np.ndarray:
    return s * s * (3 - 2 * s)


def camera_path(rng: np.random.Generator, kind: str, times: np.ndarray, target: np.ndarray
                ) -> CameraPath:
    """Hand-held camera around ``target``: orbit + dolly + shake; ``tripod`` only rotates about a
    fixed optical centre; ``zoom`` also animates the focal length."""
    n = len(times)
    dur = max(float(times[-1]), 1e-6)
    s = _ease(times / dur)
    radius = rng.uniform(5.0, 7.5)
    height = rng.uniform(1.3, 2.2)
    theta0 = rng.uniform(-np.pi, np.pi)
    lens0 = rng.uniform(24.0, 32.0)
    lens = np.full(n, lens0)
    shake_rot = smooth_noise(rng, times, 3, np.radians(0.25))
    if kind == "tripod":
        eye = np.array([radius * np.cos(theta0), radius * np.sin(theta0), height])
        loc = np.repeat(eye[None], n, axis=0)
        base = look_at(eye, target)
        pan = rng.choice([-1, 1]) * np.radians(rng.uniform(10, 22)) * (s - 0.5)
        tilt = np.radians(rng.uniform(-5, 5)) * np.sin(np.pi * s)
        rot = np.stack([axis_angle([0, 0, 1], pan[i]) @ base @ euler_small(tilt[i], 0, 0)
                        @ euler_small(*shake_rot[i]) for i in range(n)])
        return CameraPath(loc, rot, lens)
    dtheta = rng.choice([-1, 1]) * np.radians(rng.uniform(10, 30))
    dr = rng.uniform(-1.2, 0.8)
    if kind == "zoom":
        dtheta *= 0.3
        zoom = rng.uniform(1.6, 2.4)
        lens = lens0 * (zoom ** s if rng.random() < 0.5 else zoom ** (1 - s))
    theta = theta0 + dtheta * s
    r = radius + dr * s
    shake_pos = smooth_noise(rng, times, 3, 0.012)
    loc = np.stack([r * np.cos(theta), r * np.sin(theta), height + 0.15 * np.sin(np.pi * s)], 1)
    loc += shake_pos
    drift = smooth_noise(rng, times, 3, 0.15, freqs=(0.05, 0.3), n_terms=2)
    rot = np.stack([look_at(loc[i], target + drift[i]) @ euler_small(*shake_rot[i])
                    for i in range(n)])
    return CameraPath(loc, rot, lens)


def quat_from_matrix(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix."""
    w = np.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def continuous_quats(rots: np.ndarray) -> np.ndarray:
    """Quaternions for a rotation sequence with consistent sign (no flips between frames)."""
    q = np.stack([quat_from_matrix(r) for r in rots])
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


def crossing_path(rng: np.random.Generator, times: np.ndarray, cam_loc: np.ndarray,
                  target: np.ndarray, clearance: float, near: bool) -> RigidPath:
    """A rigid object moving across the view between the camera and the target, spinning.

    ``clearance`` is the lowest allowed centre height (object half-extent above the ground);
    ``near`` puts it close to the camera so it is large in frame.
    """
    c0 = cam_loc[len(cam_loc) // 2]
    view = target - c0
    dist = np.linalg.norm(view[:2])
    fwd = view / np.linalg.norm(view)
    side = np.cross(fwd, [0, 0, 1.0])
    side /= np.linalg.norm(side)
    lam = rng.uniform(0.35, 0.5) if near else rng.uniform(0.5, 0.85)
    speed = rng.uniform(0.4, 1.4)
    dur = max(float(times[-1]), 1e-6)
    direction = rng.choice([-1, 1])
    mid = c0 + lam * view + side * rng.uniform(-0.4, 0.4) * dist * 0.25
    tc = times - dur / 2
    loc = mid[None] + direction * side[None] * speed * tc[:, None]
    loc += fwd[None] * rng.uniform(-0.3, 0.3) * tc[:, None]
    bob = rng.uniform(0.05, 0.3)
    base_z = max(clearance + bob + 0.02, rng.uniform(clearance + bob, clearance + bob + 1.0))
    loc[:, 2] = base_z + bob * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * times + rng.uniform(0, 6.3))
    axis = rng.normal(size=3)
    rate = np.radians(rng.uniform(30, 150)) * rng.choice([-1, 1])
    r0 = axis_angle(rng.normal(size=3), rng.uniform(0, np.pi))
    rots = np.stack([axis_angle(axis, rate * t) @ r0 for t in times])
    return RigidPath(loc, continuous_quats(rots))


def slow_path(rng: np.random.Generator, times: np.ndarray, start: np.ndarray) -> RigidPath:
    """Gentle drift + yaw about z (for the deforming object standing on the ground)."""
    v = rng.normal(size=3) * [0.25, 0.25, 0.0]
    loc = start[None] + v[None] * times[:, None]
    yaw_rate = np.radians(rng.uniform(10, 40)) * rng.choice([-1, 1])
    rots = np.stack([axis_angle([0, 0, 1], yaw_rate * t) for t in times])
    return RigidPath(loc, continuous_quats(rots))
