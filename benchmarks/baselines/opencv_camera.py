"""An incremental OpenCV camera solver: the textbook matchmove baseline.

1. Feature tracks: Shi–Tomasi corners tracked with pyramidal LK + forward–backward check,
   replenished as they die.
2. Model selection: the frame pair (0, j) with most parallax left after a homography fit
   (80th percentile of the residuals); if even that is below ~1 px the shot is treated as a nodal pan (tripod): rotations come from
   ``K^-1 H K`` chained frame to frame, centres stay at the origin.
3. Otherwise: essential matrix (RANSAC) + ``recoverPose`` on (0, j), triangulation, then every
   other frame registered by ``solvePnPRansac`` and new points triangulated as they appear,
   finished by a sparse bundle adjustment (scipy ``least_squares``, Huber loss).
4. Focal: given (``--focal``), or chosen among candidates 0.6–2.5 × max(W, H) by lowest
   reprojection error, then refined in the bundle adjustment.

Query points are tracked with the LK baseline and triangulated from all their visible frames
with the solved cameras, assuming they are static (so moving points score badly in 3D, as for
any classic matchmove solver). Poses are camera-to-world, OpenCV axes, world = first solved
camera; ``metadata["solve"]["solved_frames"]`` lists the frames that were registered.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._io import clip_fps, load_frames, write_result
from .opencv_lk import lk_step, track_lk

NAME = "cv_camera"


# ------------------------------------------------------------------------------ feature tracks
def feature_tracks(frames: np.ndarray, max_corners: int = 600, min_distance: int = 8) -> np.ndarray:
    """(M, T, 2) float32 feature tracks (NaN where a track does not exist), forwards only."""
    import cv2

    t = len(frames)
    tracks: list[np.ndarray] = []
    pos = np.zeros((0, 2), np.float32)
    ids = np.zeros(0, int)
    for i in range(t):
        if i > 0 and len(pos):
            new, ok = lk_step(frames[i - 1], frames[i], pos)
            pos, ids = new[ok], ids[ok]
            for k, p in zip(ids, pos):
                tracks[k][i] = p
        if len(pos) < 0.7 * max_corners:
            mask = np.full(frames[i].shape, 255, np.uint8)
            for p in pos:
                cv2.circle(mask, (int(p[0]), int(p[1])), min_distance, 0, -1)
            c = cv2.goodFeaturesToTrack(frames[i], max_corners - len(pos), 0.01, min_distance,
                                        mask=mask, blockSize=7)
            if c is not None:
                c = c.reshape(-1, 2).astype(np.float32)
                for p in c:
                    tr = np.full((t, 2), np.nan, np.float32)
                    tr[i] = p
                    tracks.append(tr)
                pos = np.concatenate([pos, c])
                ids = np.concatenate([ids, np.arange(len(tracks) - len(c), len(tracks))])
    return np.stack(tracks) if tracks else np.zeros((0, t, 2), np.float32)


# ---------------------------------------------------------------------------------- geometry
def _kmat(f: float, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.float64)


def _proj(k, r, t, x):
    pc = x @ r.T + t
    uv = pc @ k.T
    return uv[:, :2] / uv[:, 2:3], pc[:, 2]


def _triangulate(k, poses, obs_frames, obs_xy):
    """Linear (DLT) triangulation of one point from several (R, t) world-to-camera poses."""
    rows = []
    for f, (x, y) in zip(obs_frames, obs_xy):
        p = k @ np.hstack([poses[f][0], poses[f][1][:, None]])
        rows += [x * p[2] - p[0], y * p[2] - p[1]]
    _, _, vt = np.linalg.svd(np.asarray(rows))
    xh = vt[-1]
    return xh[:3] / xh[3] if abs(xh[3]) > 1e-12 else np.full(3, np.nan)


def _parallax(a: np.ndarray, b: np.ndarray) -> float:
    """80th-percentile residual (px) of b against the best homography from a: the parallax a
    pan cannot explain (a high percentile, so one dominant plane does not hide it)."""
    import cv2

    h, _ = cv2.findHomography(a, b, cv2.RANSAC, 1.0)
    if h is None:
        return 0.0
    ah = np.hstack([a, np.ones((len(a), 1))]) @ h.T
    return float(np.percentile(np.linalg.norm(ah[:, :2] / ah[:, 2:3] - b, axis=1), 80))


def _rotation_only(tracks: np.ndarray, k: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    import cv2

    t = tracks.shape[1]
    poses = {0: (np.eye(3), np.zeros(3))}
    kinv = np.linalg.inv(k)
    for i in range(1, t):
        both = np.isfinite(tracks[:, i - 1, 0]) & np.isfinite(tracks[:, i, 0])
        if both.sum() < 8 or (i - 1) not in poses:
            continue
        h, _ = cv2.findHomography(tracks[both, i - 1], tracks[both, i], cv2.RANSAC, 1.0)
        if h is None:
            continue
        u, _, vt = np.linalg.svd(kinv @ h @ k)
        r = u @ vt * np.sign(np.linalg.det(u @ vt))  # x_i = K R_rel K^-1 x_{i-1}
        poses[i] = (r @ poses[i - 1][0], np.zeros(3))
    return poses


def _incremental(tracks: np.ndarray, k: np.ndarray, init_j: int, reproj_px: float = 2.0):
    """Essential matrix on (0, init_j), then PnP registration + triangulation of the rest."""
    import cv2

    m, t = tracks.shape[:2]
    fin = np.isfinite(tracks[..., 0])
    both = fin[:, 0] & fin[:, init_j]
    a, b = tracks[both, 0].astype(np.float64), tracks[both, init_j].astype(np.float64)
    e, inl = cv2.findEssentialMat(a, b, k, cv2.RANSAC, 0.999, 1.0)
    if e is None or e.shape != (3, 3):
        return {}, np.full((m, 3), np.nan)
    _, r, tv, inl2 = cv2.recoverPose(e, a, b, k, mask=inl.copy())
    poses = {0: (np.eye(3), np.zeros(3)), init_j: (r, tv.ravel())}
    pts = np.full((m, 3), np.nan)

    def try_triangulate(idx_list, frame_set):
        for i in idx_list:
            fr = [f for f in frame_set if fin[i, f]]
            if len(fr) < 2:
                continue
            # enough baseline: the two furthest-apart registered views
            c1, c2 = -poses[fr[0]][0].T @ poses[fr[0]][1], -poses[fr[-1]][0].T @ poses[fr[-1]][1]
            x = _triangulate(k, poses, fr, tracks[i, fr])
            if not np.isfinite(x).all():
                continue
            d1, d2 = x - c1, x - c2
            cosang = d1 @ d2 / (np.linalg.norm(d1) * np.linalg.norm(d2) + 1e-12)
            if cosang > np.cos(np.radians(1.0)):
                continue
            ok = True
            for f in fr:
                uv, z = _proj(k, *poses[f], x[None])
                if z[0] <= 0 or np.linalg.norm(uv[0] - tracks[i, f]) > reproj_px:
                    ok = False
                    break
            if ok:
                pts[i] = x

    try_triangulate(np.nonzero(both)[0][inl2.ravel() > 0], [0, init_j])
    order = list(range(init_j + 1, t)) + list(range(init_j - 1, 0, -1))
    for f in order:
        have = np.isfinite(pts[:, 0]) & fin[:, f]
        if have.sum() < 8:
            continue
        ok, rvec, tvec, inl = cv2.solvePnPRansac(pts[have], tracks[have, f].astype(np.float64), k,
                                                 None, reprojectionError=reproj_px,
                                                 iterationsCount=200, flags=cv2.SOLVEPNP_EPNP)
        if not ok or inl is None or len(inl) < 8:
            continue
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(pts[have][inl], tracks[have, f][inl].astype(np.float64),
                                          k, None, rvec, tvec)
        poses[f] = (cv2.Rodrigues(rvec)[0], tvec.ravel())
        reg = sorted(poses)
        try_triangulate(np.nonzero(~np.isfinite(pts[:, 0]) & fin[:, f])[0], reg)
    return poses, pts


def bundle_adjust(tracks: np.ndarray, k: np.ndarray, poses: dict, pts: np.ndarray,
                  refine_focal: bool = False, max_nfev: int = 50):
    """Sparse BA over registered poses (first one fixed) and triangulated points; Huber 1 px.

    Returns (poses, pts, focal, mean reprojection error px).
    """
    import cv2
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    frames = sorted(poses)
    fixed = frames[0]
    free = frames[1:]
    pid = np.nonzero(np.isfinite(pts[:, 0]))[0]
    obs = [(fi, pi, tracks[p, f]) for pi, p in enumerate(pid) for fi, f in enumerate(frames)
           if np.isfinite(tracks[p, f, 0])]
    if not obs or not free:
        return poses, pts, float(k[0, 0]), float("nan")
    of = np.array([o[0] for o in obs])
    op = np.array([o[1] for o in obs])
    oxy = np.array([o[2] for o in obs], np.float64)
    nc, npnt = len(free), len(pid)
    x0 = [np.concatenate([cv2.Rodrigues(poses[f][0])[0].ravel(), poses[f][1]]) for f in free]
    x0 = np.concatenate([np.ravel(x0), pts[pid].ravel()] + ([[k[0, 0]]] if refine_focal else []))
    r_fix = poses[fixed]

    def unpack(x):
        cams = x[:6 * nc].reshape(nc, 6)
        xp = x[6 * nc:6 * nc + 3 * npnt].reshape(npnt, 3)
        f = x[-1] if refine_focal else k[0, 0]
        return cams, xp, f

    def resid(x):
        cams, xp, f = unpack(x)
        rs = np.empty((len(frames), 3, 3))
        ts = np.empty((len(frames), 3))
        rs[0], ts[0] = r_fix
        for i in range(nc):
            rs[i + 1] = cv2.Rodrigues(cams[i, :3])[0]
            ts[i + 1] = cams[i, 3:]
        pc = np.einsum("nij,nj->ni", rs[of], xp[op]) + ts[of]
        z = np.where(np.abs(pc[:, 2]) < 1e-9, 1e-9, pc[:, 2])
        u = f * pc[:, 0] / z + k[0, 2]
        v = f * pc[:, 1] / z + k[1, 2]
        return np.concatenate([u - oxy[:, 0], v - oxy[:, 1]])

    n_obs = len(obs)
    sp = lil_matrix((2 * n_obs, len(x0)), dtype=np.uint8)
    rows = np.arange(n_obs)
    for d in range(2):
        r_ = rows + d * n_obs
        cam_rows = of > 0
        for c in range(6):
            sp[r_[cam_rows], 6 * (of[cam_rows] - 1) + c] = 1
        for c in range(3):
            sp[r_, 6 * nc + 3 * op + c] = 1
        if refine_focal:
            sp[r_, len(x0) - 1] = 1
    res = least_squares(resid, x0, jac_sparsity=sp, loss="huber", f_scale=1.0, x_scale="jac",
                        max_nfev=max_nfev, method="trf")
    cams, xp, f = unpack(res.x)
    out = {fixed: r_fix}
    for i, fr in enumerate(free):
        out[fr] = (cv2.Rodrigues(cams[i, :3])[0], cams[i, 3:].copy())
    pts = pts.copy()
    pts[pid] = xp
    r = resid(res.x).reshape(2, -1)
    return out, pts, float(f), float(np.mean(np.hypot(r[0], r[1])))


def solve_camera(frames: np.ndarray, focal: float | None = None) -> dict:
    """Solve the camera of grey ``frames`` (T, H, W). Returns ``cam_to_world`` (T, 4, 4),
    ``K`` (3, 3), ``solved`` (T,) bool, ``model`` ('general' | 'rotation'), ``reproj_error``."""
    t, h, w = frames.shape
    size = (w, h)
    tracks = feature_tracks(frames)
    fin = np.isfinite(tracks[..., 0])
    n01 = max(1, int((fin[:, 0] & fin[:, min(1, t - 1)]).sum()))
    best_j, best_par = 1, -1.0
    for j in range(1, t):
        both = fin[:, 0] & fin[:, j]
        if both.sum() < max(30, 0.25 * n01):
            break
        par = _parallax(tracks[both, 0].astype(np.float64), tracks[both, j].astype(np.float64))
        if par > best_par:
            best_j, best_par = j, par
        if par > 0.02 * w:
            break
    candidates = [focal] if focal else [s * max(w, h) for s in (0.6, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5)]
    if best_par < 1.0:  # a nodal pan: no translation to triangulate from
        best = None
        for f in candidates:
            k = _kmat(f, size)
            poses = _rotation_only(tracks, k)
            err = _rotation_reproj(tracks, k, poses)
            if best is None or err < best[0]:
                best = (err, f, poses)
        err, f, poses = best
        model, pts = "rotation", None
    else:
        best = None
        for f in candidates:
            k = _kmat(f, size)
            poses, pts = _incremental(tracks, k, best_j)
            if len(poses) < 2:
                continue
            if len(candidates) > 1:  # score the focal by the reprojection error after a short BA
                poses, pts, _, err = bundle_adjust(tracks, k, poses, pts, max_nfev=5)
            else:
                err = 0.0
            score = err if len(poses) >= 0.9 * t else err + 100.0 * (1 - len(poses) / t)
            if best is None or score < best[0]:
                best = (score, f, poses, pts)
        if best is None:
            return {"cam_to_world": np.tile(np.eye(4), (t, 1, 1)), "K": _kmat(candidates[0], size),
                    "solved": np.zeros(t, bool), "model": "failed", "reproj_error": float("nan")}
        _, f, poses, pts = best
        poses, pts, f, err = bundle_adjust(tracks, _kmat(f, size), poses, pts,
                                           refine_focal=focal is None, max_nfev=100)
        model = "general"
    solved = np.zeros(t, bool)
    c2w = np.tile(np.eye(4), (t, 1, 1))
    for fr, (r, tv) in poses.items():
        solved[fr] = True
        c2w[fr, :3, :3] = r.T
        c2w[fr, :3, 3] = -r.T @ tv
    reg = np.nonzero(solved)[0]
    for fr in np.nonzero(~solved)[0]:  # hold the nearest solved pose (marked unsolved)
        c2w[fr] = c2w[reg[np.argmin(np.abs(reg - fr))]] if len(reg) else np.eye(4)
    return {"cam_to_world": c2w, "K": _kmat(f, size), "solved": solved, "model": model,
            "reproj_error": float(err), "n_points": int(0 if pts is None else np.isfinite(pts[:, 0]).sum())}


def _rotation_reproj(tracks, k, poses) -> float:
    """Mean transfer error of the rotation-only model between consecutive frames."""
    errs = []
    kinv = np.linalg.inv(k)
    for i in range(1, tracks.shape[1]):
        if i not in poses or i - 1 not in poses:
            continue
        both = np.isfinite(tracks[:, i - 1, 0]) & np.isfinite(tracks[:, i, 0])
        h = k @ poses[i][0] @ poses[i - 1][0].T @ kinv
        a = np.hstack([tracks[both, i - 1], np.ones((both.sum(), 1))]) @ h.T
        errs.append(np.linalg.norm(a[:, :2] / a[:, 2:3] - tracks[both, i], axis=1))
    return float(np.median(np.concatenate(errs))) if errs else float("inf")


def lift_static(tracks_2d: np.ndarray, visible: np.ndarray, c2w: np.ndarray, k: np.ndarray,
                solved: np.ndarray, max_reproj_px: float = 4.0) -> np.ndarray:
    """Triangulate each 2D track as a static point from its visible, solved frames (NaN if
    fewer than 2 or the mean reprojection exceeds ``max_reproj_px``); returns (N, T, 3)."""
    n, t = visible.shape
    w2c = np.linalg.inv(c2w)
    poses = {f: (w2c[f, :3, :3], w2c[f, :3, 3]) for f in range(t) if solved[f]}
    out = np.full((n, t, 3), np.nan)
    for i in range(n):
        fr = [f for f in range(t) if visible[i, f] and solved[f]]
        if len(fr) < 2:
            continue
        x = _triangulate(k, poses, fr, tracks_2d[i, fr])
        if not np.isfinite(x).all():
            continue
        errs = [np.linalg.norm(_proj(k, *poses[f], x[None])[0][0] - tracks_2d[i, f]) for f in fr]
        if np.mean(errs) <= max_reproj_px:
            out[i] = x
    return out


def run(clip_dir: str | Path, query: np.ndarray, out: str | Path, focal: float | None = None,
        solve: bool = True) -> Path:
    frames = load_frames(clip_dir)
    t, h, w = frames.shape
    sol = solve_camera(frames, focal)
    tracks, vis = track_lk(frames, query)
    pts3 = (lift_static(tracks, vis, sol["cam_to_world"], sol["K"], sol["solved"])
            if sol["model"] == "general" else None)
    solve = {"success": bool(sol["solved"].mean() >= 0.9), "model": sol["model"],
             "solved_frames": np.nonzero(sol["solved"])[0].tolist(),
             "reproj_error": sol["reproj_error"], "focal_given": focal is not None}
    return write_result(out, query=query, tracks_2d=tracks, visible=vis, image_size=(w, h),
                        fps=clip_fps(clip_dir), method=NAME, settings={"focal_given": focal},
                        tracks_3d=pts3, cam_to_world=sol["cam_to_world"].astype(np.float32),
                        K=np.tile(sol["K"].astype(np.float32), (t, 1, 1)), solve=solve)
