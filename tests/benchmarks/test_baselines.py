"""Baselines on a synthetic clip with exactly known motion (a textured plane translated by a
known sub-pixel amount per frame, written as PNGs), and real Blender for libmv."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from benchmarks import metrics as M  # noqa: E402
from engine.trackfile import load_trackfile  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
V = np.array([1.5, 0.7])  # px per frame
EDGE0, PANEL_V = 140, 6


def _texture(h, w, seed=0, blur=1.5):
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.uint8), (0, 0), blur)
    return cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)


@pytest.fixture(scope="module")
def moving_clip(tmp_path_factory):
    """12 frames 160x120 of a texture moving by V px/frame; a textured panel slides in from the
    right at PANEL_V px/frame and covers x >= EDGE0 - PANEL_V t. Returns (clip_dir, queries, gt_tracks, gt_visible)."""
    d = tmp_path_factory.mktemp("clip")
    (d / "frames").mkdir()
    w, h, t = 160, 120, 12
    big = _texture(2 * h, 2 * w)
    panel = _texture(h, 2 * w, seed=9)
    for i in range(t):
        m = np.float32([[1, 0, -w / 2 + V[0] * i], [0, 1, -h / 2 + V[1] * i]])
        img = cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR)
        edge = EDGE0 - PANEL_V * i  # a textured panel slides in from the right
        img[:, edge:] = panel[:, PANEL_V * i:PANEL_V * i + w - edge]
        cv2.imwrite(str(d / "frames" / f"{i:05d}.png"), img)
    xs, ys = np.meshgrid(np.arange(20, 100, 16.0), np.arange(20, 90, 16.0))
    q0 = np.stack([np.zeros(xs.size), xs.ravel(), ys.ravel()], 1)
    q1 = np.array([[3, 40.2, 50.7], [11, 60.0, 70.0]])
    q = np.concatenate([q0, q1]).astype(np.float32)
    tt = np.arange(t)[None, :, None]
    gt = q[:, None, 1:] + (tt - q[:, None, :1]) * V
    vis = gt[..., 0] < EDGE0 - PANEL_V * tt[..., 0] - 1.5
    vis &= (gt[..., 0] > 0) & (gt[..., 1] > 0) & (gt[..., 0] < w - 1) & (gt[..., 1] < h - 1)
    np.save(d / "q.npy", q)
    return d, q, gt, vis


def _run(method, clip, q, out, focal=None):
    cmd = [sys.executable, "-m", "benchmarks.baselines", method, str(clip), "--queries", str(q),
           "--out", str(out)] + (["--focal", str(focal)] if focal else [])
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return load_trackfile(out)


@pytest.mark.parametrize("method,tol,occ", [("dis", 1.0, 0.65), ("lk", 0.3, 0.65)])
def test_flow_baselines_track_known_motion(moving_clip, tmp_path, method, tol, occ):
    d, q, gt, vis = moving_clip
    res = _run(method, d, d / "q.npy", tmp_path / f"{method}.npz")
    assert res.metadata["engine"]["version"] == f"baseline:{method}"
    np.testing.assert_allclose(res.query, q)
    tr = np.asarray(res.tracks_2d)
    # the query frame holds the query exactly
    qi = q[:, 0].astype(int)
    np.testing.assert_allclose(tr[np.arange(len(q)), qi], q[:, 1:], atol=1e-4)
    both = vis & np.asarray(res.visible)
    err = np.linalg.norm(tr - gt, axis=-1)[both]
    assert np.median(err) < tol / 2 and np.percentile(err, 90) < tol
    # points behind the occluder are mostly flagged occluded
    hidden = gt[..., 0] >= EDGE0 - PANEL_V * np.arange(12)[None, :] + 3
    assert hidden.sum() > 5 and np.mean(~np.asarray(res.visible)[hidden]) > occ
    m = M.tapvid_metrics(q[:, 0], ~vis, gt, ~np.asarray(res.visible), tr, "first")
    assert m["average_jaccard"] > 0.6 and m["occlusion_accuracy"] > 0.9


def test_cli_rejects_bad_queries(moving_clip, tmp_path):
    d, *_ = moving_clip
    np.save(tmp_path / "bad.npy", np.zeros((4, 2), np.float32))
    r = subprocess.run([sys.executable, "-m", "benchmarks.baselines", "lk", str(d), "--queries",
                        str(tmp_path / "bad.npy"), "--out", str(tmp_path / "x.npz")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "queries must be (N, 3)" in r.stderr


def _orbit_scene(tmp_path, n_frames=16, w=320, h=240, f=280.0):
    """Render a textured box room seen from a sideways-moving, panning camera with OpenCV
    (planar textures warped by the exact homographies), returning the true poses."""
    rng = np.random.default_rng(3)
    planes = []  # (origin, u, v, texture) in world; 4 m x 4 m textured planes
    for origin, u, v in (((-3, -2, 6), (6, 0, 0), (0, 4, 0)),       # back wall z = 6
                         ((-3, 2, 1), (6, 0, 0), (0, 0, 5)),        # floor y = 2
                         ((-3, -2, 1), (0, 0, 5), (0, 4, 0))):      # left wall x = -3
        planes.append((np.array(origin, float), np.array(u, float), np.array(v, float),
                       _texture(512, 512, seed=len(planes), blur=3.0)))
    k = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    c2w = np.tile(np.eye(4), (n_frames, 1, 1))
    (tmp_path / "frames").mkdir(parents=True, exist_ok=True)
    for i in range(n_frames):
        a = np.radians(-8 + 1.0 * i)
        r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        c = np.array([0.08 * i - 0.6, 0.02 * np.sin(i), 0.03 * i])
        c2w[i, :3, :3], c2w[i, :3, 3] = r, c
        img = np.zeros((h, w), np.uint8)
        zbuf = np.full((h, w), np.inf)
        for o, u, v, tex in planes:
            corners = np.array([o, o + u, o + u + v, o + v])
            pc = (corners - c) @ r
            if (pc[:, 2] <= 0.1).any():
                continue
            px = pc @ k.T
            px = (px[:, :2] / px[:, 2:3]).astype(np.float32)
            src = np.float32([[0, 0], [511, 0], [511, 511], [0, 511]])
            hm = cv2.getPerspectiveTransform(src, px)
            warped = cv2.warpPerspective(tex, hm, (w, h), flags=cv2.INTER_LINEAR)
            mask = cv2.warpPerspective(np.ones_like(tex), hm, (w, h), flags=cv2.INTER_NEAREST) > 0
            depth = float(pc[:, 2].mean())
            sel = mask & (depth < zbuf)
            img[sel], zbuf[sel] = warped[sel], depth
        cv2.imwrite(str(tmp_path / "frames" / f"{i:05d}.png"), img)
    return c2w, k


def test_opencv_camera_solves_a_known_trajectory(tmp_path):
    from benchmarks.baselines.opencv_camera import solve_camera
    from benchmarks.baselines._io import load_frames

    c2w, k = _orbit_scene(tmp_path)
    frames = load_frames(tmp_path)
    sol = solve_camera(frames, focal=k[0, 0])
    assert sol["model"] == "general" and sol["solved"].mean() >= 0.9
    kk = np.tile(k, (len(c2w), 1, 1))
    m = M.camera_metrics(sol["cam_to_world"], c2w, np.tile(sol["K"], (len(c2w), 1, 1)), kk,
                         solved=sol["solved"])
    assert m["ate_pct"] < 5 and m["are_deg"] < 1.0 and m["success"] == 1
    sol = solve_camera(frames, focal=None)  # focal estimated
    m = M.camera_metrics(sol["cam_to_world"], c2w, np.tile(sol["K"], (len(c2w), 1, 1)), kk,
                         solved=sol["solved"])
    assert m["solved_fraction"] >= 0.9 and m["focal_err_median"] < 0.5


@pytest.mark.blender
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy not installed")
def test_libmv_tracks_queries_and_solves(tmp_path, moving_clip):
    d, q, gt, vis = moving_clip
    res = _run("libmv", d, d / "q.npy", tmp_path / "libmv.npz", focal=150.0)
    tr = np.asarray(res.tracks_2d)
    both = vis & np.asarray(res.visible)
    assert both.sum() > 0.5 * vis.sum()
    err = np.linalg.norm(tr - gt, axis=-1)[both]
    assert np.median(err) < 0.3  # libmv's KLT on a pure translation
    solve = res.metadata["solve"]
    assert {"solved_frames", "reproj_error", "n_tracks"} <= set(solve)
    assert res.K[0, 0, 0] == pytest.approx(150.0)
