"""Synthetic scenes with exact ground truth for the solve/lift tests (numpy only).

World: Z up, metres. Cameras: cam_to_world in OpenCV axes. Scenes are built from random points on
a ground plane, a back wall and boxes; the camera path is one of ``orbit`` (hand-held dolly/orbit
with shake), ``tripod`` (nodal pan/tilt), ``zoom`` (nodal, focal ramps 1.0x -> 1.6x), ``orbit_zoom`` (the
orbit path while zooming 1.0x -> 1.4x) or
``dynamic`` (orbit plus a large moving rigid box) or ``forward`` (dolly-in: the camera drives
straight ahead along its optical axis with slight shake, as from a car; the focal length is then
barely observable). Observations get 0.3 px Gaussian noise and a
fraction of gross-outlier tracks (sudden jumps and slow drifts of 10-40 px).
"""
from __future__ import annotations

import numpy as np


def look_at(C: np.ndarray, target: np.ndarray, up=(0, 0, 1.0)) -> np.ndarray:
    f = target - C
    f = f / np.linalg.norm(f)
    r = np.cross(f, up)
    r = r / np.linalg.norm(r)
    d = np.cross(f, r)
    M = np.eye(4)
    M[:3, :3] = np.stack([r, d, f], axis=1)
    M[:3, 3] = C
    return M


def _rot(axis, ang):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K


def _box(rng, centre, size, n):
    """n points on the 5 visible faces (no bottom) of an axis-aligned box."""
    pts = rng.uniform(-0.5, 0.5, size=(n, 3))
    face = rng.integers(0, 5, n)
    ax = np.array([0, 0, 1, 1, 2])[face]
    sign = np.array([-0.5, 0.5, -0.5, 0.5, 0.5])[face]
    pts[np.arange(n), ax] = sign
    return pts * np.asarray(size) + np.asarray(centre)


def static_points(rng, n):
    n_g, n_w = int(n * 0.45), int(n * 0.3)
    g = np.stack([rng.uniform(-7, 7, n_g), rng.uniform(2, 14, n_g), np.zeros(n_g)], 1)
    w = np.stack([rng.uniform(-8, 8, n_w), np.full(n_w, 14.0), rng.uniform(0, 6, n_w)], 1)
    nb = n - n_g - n_w
    b = np.concatenate([_box(rng, (-2.5, 7, 0.75), (1.5, 1.5, 1.5), nb // 2),
                        _box(rng, (2.5, 10, 1.25), (2, 2, 2.5), nb - nb // 2)])
    return np.concatenate([g, w, b])


def smooth_noise(rng, T, dim, scale, knots=6):
    k = rng.normal(0, scale, size=(knots, dim))
    return np.stack([np.interp(np.linspace(0, knots - 1, T), np.arange(knots), k[:, j])
                     for j in range(dim)], 1)


def make_scene(kind: str = "orbit", T: int = 40, n_points: int = 1500, W: int = 640,
               H: int = 480, noise: float = 0.3, outlier_frac: float = 0.02, seed: int = 0,
               focal: float | None = None, k1: float = 0.0, object_scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    f0 = focal if focal is not None else 1.1 * W
    X = static_points(rng, n_points)
    groups = -np.ones(len(X), int)
    s = np.linspace(0, 1, T)
    focals = np.full(T, f0)
    c2w = np.zeros((T, 4, 4))
    if kind in ("orbit", "dynamic", "orbit_zoom"):
        shake = smooth_noise(rng, T, 3, 0.05, knots=max(3, T // 5))
        for t in range(T):
            a = np.deg2rad(-15 + 30 * s[t])
            C = np.array([6 * np.sin(a) * 0.6 - 1.5 + 3 * s[t] * 0.5, -1.0 - 2 * s[t], 1.6]) + shake[t]
            c2w[t] = look_at(C, np.array([0.0, 8.0, 1.0]) + shake[t] * 3)
    elif kind in ("tripod", "zoom"):
        C = np.array([0.0, -1.0, 1.5])
        for t in range(T):
            yaw = np.deg2rad(-12 + 24 * s[t]) if kind == "tripod" else np.deg2rad(-8 + 16 * s[t])
            tilt = np.deg2rad(3 * np.sin(3 * s[t]))
            M = look_at(C, C + np.array([0, 1.0, -0.05]))
            Rw = _rot((0, 0, 1), -yaw)
            M[:3, :3] = Rw @ M[:3, :3] @ _rot((1, 0, 0), tilt)
            c2w[t] = M
        if kind == "zoom":
            focals = f0 * (1.0 + 0.6 * s ** 1.5)
    elif kind == "forward":
        # 4 m straight ahead at 1.5 m height; shake of a few cm and ~0.2 deg (a car, a dolly)
        shake = smooth_noise(rng, T, 3, 0.02, knots=max(3, T // 5))
        for t in range(T):
            C = np.array([0.0, -4.0 + 4.0 * s[t], 1.5]) + shake[t]
            c2w[t] = look_at(C, C + np.array([0.0, 10.0, -0.3]) + shake[t] * 3)
    else:
        raise ValueError(kind)
    if kind == "orbit_zoom":
        focals = f0 * (1.0 + 0.4 * s)
    K = np.zeros((T, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = focals
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = (W - 1) / 2, (H - 1) / 2, 1
    X_t = np.repeat(X[:, None], T, 1)
    if kind == "dynamic":
        n_obj = n_points // 2
        P = _box(rng, (0, 0, 0), np.array([2.0, 1.5, 1.4]) * object_scale, n_obj)
        Xo = np.zeros((n_obj, T, 3))
        for t in range(T):
            R = _rot((0, 0, 1), np.deg2rad(40 * s[t]))
            Xo[:, t] = P @ R.T + np.array([-2.0 + 3.5 * s[t], 4.0 + 1.0 * s[t], 0.7 * object_scale])
        X_t = np.concatenate([X_t, Xo])
        groups = np.concatenate([groups, np.zeros(n_obj, int)])
    N = len(X_t)
    tracks = np.zeros((N, T, 2))
    depth = np.zeros((N, T))
    for t in range(T):
        R, C = c2w[t, :3, :3], c2w[t, :3, 3]
        xc = (X_t[:, t] - C) @ R
        depth[:, t] = xc[:, 2]
        xn = xc[:, :2] / xc[:, 2:3]
        if k1:  # Blender polynomial radial distortion on normalised coordinates
            xn = xn * (1 + k1 * np.sum(xn ** 2, axis=1, keepdims=True))
        tracks[:, t] = xn * focals[t] + K[t, :2, 2]
    vis = (depth > 0.1) & (tracks[..., 0] > 0) & (tracks[..., 0] < W - 1) & \
          (tracks[..., 1] > 0) & (tracks[..., 1] < H - 1)
    if kind == "dynamic":  # the box hides background points behind it (crude z-test by bbox)
        obj = groups == 0
        for t in range(T):
            ov = vis[obj, t]
            if ov.sum() < 3:
                continue
            p = tracks[obj, t][ov]
            lo, hi = p.min(0), p.max(0)
            zobj = depth[obj, t][ov].min()
            inside = ((tracks[:, t] > lo) & (tracks[:, t] < hi)).all(1) & (depth[:, t] > zobj + 1) & ~obj
            vis[inside, t] = False
    obs = tracks + rng.normal(0, noise, tracks.shape)
    n_out = int(round(outlier_frac * N))
    out_ids = rng.choice(N, n_out, replace=False)
    for i in out_ids:
        if rng.random() < 0.5:
            t0 = rng.integers(1, T)
            obs[i, t0:] += rng.uniform(10, 40) * rng.choice([-1, 1], 2)
        else:
            obs[i] += np.linspace(0, 1, T)[:, None] * rng.uniform(-40, 40, 2)
    obs[~vis] = np.nan
    return dict(tracks_2d=obs.astype(np.float32), visible=vis, tracks_3d=X_t, c2w=c2w, K=K,
                group=groups, W=W, H=H, focals=focals, outliers=out_ids, true_2d=tracks, k1=k1)


def to_trackdata(sc: dict):
    """Wrap a scene into an engine TrackData as the tracker would hand it over."""
    from engine.trackfile import TrackData, make_metadata

    N, T = sc["visible"].shape
    W, H = sc["W"], sc["H"]
    xy = np.nan_to_num(sc["tracks_2d"]).astype(np.float32)
    first = np.argmax(sc["visible"], axis=1)
    q = np.stack([first, xy[np.arange(N), first, 0], xy[np.arange(N), first, 1]], 1)
    K = np.tile(np.array([[1.2 * max(W, H), 0, (W - 1) / 2], [0, 1.2 * max(W, H), (H - 1) / 2],
                          [0, 0, 1]], np.float32), (T, 1, 1))
    return TrackData(query=q.astype(np.float32), tracks_2d=xy, visible=sc["visible"].copy(),
                     confidence=sc["visible"].astype(np.float32),
                     tracks_3d=np.full((N, T, 3), np.nan, np.float32),
                     cam_to_world=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)), K=K,
                     metadata=make_metadata((W, H), (0, T - 1), 24.0))


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True):
    """Sim(3) (s, R, t) minimising ||dst - (s R src + t)||."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    if np.linalg.det(U @ Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = (S * np.diag(D)).sum() / a.var(0).sum() if with_scale else 1.0
    return s, R, mu_d - s * R @ mu_s


def ate(c2w_est: np.ndarray, c2w_gt: np.ndarray) -> tuple[float, float]:
    """(median ATE after Sim(3) alignment, path length of the ground truth)."""
    pe, pg = np.asarray(c2w_est[:, :3, 3], float), np.asarray(c2w_gt[:, :3, 3], float)
    if np.ptp(pg, axis=0).max() < 1e-9:
        return 0.0, 0.0
    s, R, t = umeyama(pe, pg)
    err = np.linalg.norm((s * pe @ R.T + t) - pg, axis=1)
    return float(np.median(err)), float(np.linalg.norm(np.diff(pg, axis=0), axis=1).sum())


def rotation_errors_deg(c2w_est: np.ndarray, c2w_gt: np.ndarray) -> np.ndarray:
    """Per-frame relative-rotation error (deg) of frame t vs frame 0 (gauge-free)."""
    out = []
    for t in range(len(c2w_gt)):
        Re = c2w_est[0, :3, :3].T @ c2w_est[t, :3, :3]
        Rg = c2w_gt[0, :3, :3].T @ c2w_gt[t, :3, :3]
        # chordal form: accurate for tiny angles, unlike arccos of the trace
        out.append(np.degrees(2 * np.arcsin(min(1.0, np.linalg.norm(Re - Rg) / (2 * np.sqrt(2))))))
    return np.array(out)
