"""Exact synthetic track files (and a matching little movie) for the Blender tests.

A static scene (floor grid + back wall) and one moving rigid object (group 0) seen by an orbiting
camera with an off-centre principal point (and optional zoom). Tracks are exact projections, so
every Blender-side conversion can be checked to ~1e-3 px. Plain numpy + the engine's track file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def blender42() -> bool:
    """True on Blender < 4.4 (legacy actions), e.g. the 4.2 LTS test environment."""
    import bpy

    return bpy.app.version < (4, 4, 0)


def look_at_cv(eye, target, up=(0, 0, 1)) -> np.ndarray:
    """camera-to-world (4x4), OpenCV camera axes (x right, y down, z forward)."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


@dataclass
class Synth:
    data: object            # engine.trackfile.TrackData
    object_motion: np.ndarray  # (T,4,4) true motion of group 0: X_t = M_t @ X_body
    path: Path | None = None


def make_trackdata(T: int = 24, W: int = 160, H: int = 96, seed: int = 0, first_frame: int = 0,
                   fps: float = 24.0, zoom: bool = False, hidden_frac: float = 0.1):
    from engine.trackfile import TrackData, make_metadata

    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.linspace(-2, 2, 12), np.linspace(-1.5, 2.0, 10))
    floor = np.c_[gx.ravel(), gy.ravel(), np.zeros(gx.size)]
    wx, wz = np.meshgrid(np.linspace(-2, 2, 9), np.linspace(0.2, 1.6, 5))
    wall = np.c_[wx.ravel(), np.full(wx.size, 2.2), wz.ravel()]
    static = np.r_[floor, wall]
    body = rng.uniform(-0.3, 0.3, (40, 3))  # points of the moving object, body frame
    n_s, n_m = len(static), len(body)
    N = n_s + n_m

    motion = np.tile(np.eye(4), (T, 1, 1))
    X = np.empty((N, T, 3))
    c2w = np.empty((T, 4, 4))
    K = np.empty((T, 3, 3))
    for t in range(T):
        u = t / max(1, T - 1)
        motion[t, :3, :3] = rot_z(1.0 * u) @ rot_x(0.3 * u)
        motion[t, :3, 3] = [-0.8 + 1.6 * u, -0.2, 0.45 + 0.1 * np.sin(3 * u)]
        X[:n_s, t] = static
        X[n_s:, t] = body @ motion[t, :3, :3].T + motion[t, :3, 3]
        a = np.radians(-25 + 50 * u)
        c2w[t] = look_at_cv([5 * np.sin(a), -5 * np.cos(a), 1.8], [0, 0.3, 0.4])
        f = 0.9 * W * (1.0 + 0.25 * u if zoom else 1.0)
        K[t] = [[f, 0, W / 2 - 0.5 + 3.2], [0, f, H / 2 - 0.5 - 2.1], [0, 0, 1]]

    # Project (exact) and derive visibility.
    R = c2w[:, :3, :3]
    C = c2w[:, :3, 3]
    Xc = np.einsum("tji,ntj->nti", R, X - C[None])
    z = Xc[..., 2]
    xy = np.einsum("tij,ntj->nti", K[:, :2, :2], Xc[..., :2] / z[..., None]) + K[None, :, :2, 2]
    inside = (z > 0.1) & (xy[..., 0] > -0.5) & (xy[..., 0] < W - 0.5) & (xy[..., 1] > -0.5) & (xy[..., 1] < H - 0.5)
    occl = rng.random((N, T)) < hidden_frac
    visible = inside & ~occl
    tracks_2d = xy.astype(np.float32)
    tracks_3d = X.astype(np.float32)
    # Some unknown 3D positions (hidden frames of a few static tracks): the builders must hold.
    unk = occl & (np.arange(N)[:, None] % 7 == 0) & (np.arange(N)[:, None] < n_s)
    tracks_3d[unk] = np.nan
    q_t = np.where(visible.any(1), visible.argmax(1), 0)
    query = np.c_[q_t, tracks_2d[np.arange(N), q_t]].astype(np.float32)
    conf = np.where(visible, 0.9, 0.2).astype(np.float32)
    group = np.r_[np.full(n_s, -1), np.zeros(n_m)].astype(np.int32)
    colors = rng.integers(0, 256, (N, 3)).astype(np.uint8)
    md = make_metadata((W, H), (first_frame, first_frame + T - 1), fps, ground_truth=True,
                       solve={"rms_px": 0.0})
    data = TrackData(query=query, tracks_2d=tracks_2d, visible=visible, confidence=conf,
                     tracks_3d=tracks_3d, cam_to_world=c2w.astype(np.float32), K=K.astype(np.float32),
                     metadata=md, group=group, colors=colors)
    return Synth(data=data, object_motion=motion)


def write_video(path: Path, data, n_frames: int | None = None, fps: float = 24.0) -> Path:
    """A small real movie (mp4v) showing the projected points on a textured background.

    ``n_frames`` footage frames (default: first_frame + T), so the track file covers
    footage frames ``frame_range`` of it."""
    import cv2

    W, H = data.image_size
    first = data.metadata["frame_range"][0]
    n = n_frames or first + data.n_frames
    rng = np.random.default_rng(1)
    bg = (rng.random((H, W, 3)) * 60 + 60).astype(np.uint8)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert vw.isOpened(), "cv2.VideoWriter could not open an mp4v writer"
    for i in range(n):
        img = bg.copy()
        t = min(max(i - first, 0), data.n_frames - 1)
        for k in range(data.n_tracks):
            if data.visible[k, t]:
                x, y = data.tracks_2d[k, t]
                c = tuple(int(v) for v in data.colors[k][::-1])
                cv2.circle(img, (int(round(x)), int(round(y))), 2, c, -1)
        vw.write(img)
    vw.release()
    return path
