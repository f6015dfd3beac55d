"""Camera solve on real footage: KITTI odometry, 51 frames of a car driving ~60 m straight.

Input tracks come from OpenCV (Shi-Tomasi corners + pyramidal Lucas-Kanade with a forward-backward
check, re-seeded where tracks are lost), i.e. realistic, noisy, outlier-laden tracks. Skips cleanly
when ../shared/data/kitti_seq1 is absent.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_synth import ate  # noqa: E402


def load_kitti(root: Path, n_frames: int | None = None):
    import cv2

    poses = np.loadtxt(root / "poses.txt").reshape(-1, 3, 4)
    P0 = np.loadtxt(root / "calib.txt", max_rows=1).reshape(3, 4)
    files = sorted((root / "image_l").glob("*.png"))
    if n_frames:
        files, poses = files[:n_frames], poses[:n_frames]
    imgs = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    c2w = np.tile(np.eye(4), (len(poses), 1, 1))
    c2w[:, :3, :] = poses
    return imgs, c2w, P0[:, :3]


def lk_tracks(imgs, max_corners: int = 1500, fb_px: float = 0.5):
    """(tracks (N, T, 2) float32, visible (N, T)) from LK with forward-backward check."""
    import cv2

    T = len(imgs)
    H, W = imgs[0].shape
    tracks, vis = [], []
    alive_ids: list[int] = []
    pts = np.zeros((0, 2), np.float32)

    def seed(img, existing):
        mask = np.full(img.shape, 255, np.uint8)
        for x, y in existing:
            cv2.circle(mask, (int(x), int(y)), 8, 0, -1)
        c = cv2.goodFeaturesToTrack(img, max_corners, 0.01, 8, mask=mask)
        return np.zeros((0, 2), np.float32) if c is None else c.reshape(-1, 2)

    lk = dict(winSize=(21, 21), maxLevel=3,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    for t in range(T):
        if t > 0 and len(pts):
            nxt, st, _ = cv2.calcOpticalFlowPyrLK(imgs[t - 1], imgs[t], pts, None, **lk)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(imgs[t], imgs[t - 1], nxt, None, **lk)
            ok = (st.ravel() == 1) & (st2.ravel() == 1) & \
                 (np.linalg.norm(back - pts, axis=1) < fb_px) & \
                 (nxt[:, 0] >= 0) & (nxt[:, 0] < W) & (nxt[:, 1] >= 0) & (nxt[:, 1] < H)
            pts = nxt[ok]
            alive_ids = [i for i, k in zip(alive_ids, ok) if k]
            for i, p in zip(alive_ids, pts):
                tracks[i][t] = p
                vis[i][t] = True
        if len(pts) < 0.7 * max_corners:
            new = seed(imgs[t], pts)[: max_corners - len(pts)]
            for p in new:
                tr = np.zeros((T, 2), np.float32)
                v = np.zeros(T, bool)
                tr[t], v[t] = p, True
                tracks.append(tr)
                vis.append(v)
                alive_ids.append(len(tracks) - 1)
            pts = np.concatenate([pts, new]).astype(np.float32)
    return np.array(tracks), np.array(vis)


@pytest.mark.slow
def test_kitti_solve(shared_data):
    from engine.solve.pipeline import solve_cameras

    root = shared_data / "kitti_seq1"
    if not root.is_dir():
        pytest.skip("kitti_seq1 not present")
    imgs, c2w_gt, K_gt = load_kitti(root)
    xy, vis = lk_tracks(imgs)
    H, W = imgs[0].shape
    f_true = K_gt[0, 0]
    known = solve_cameras(xy, vis, None, (W, H), focal=f_true,
                          principal_point=(K_gt[0, 2], K_gt[1, 2]))
    a, length = ate(known.cam_to_world, c2w_gt)
    print(f"KITTI known focal: ATE {a / length:.3%} of {length:.1f} m path, "
          f"reproj {known.report['reproj_median_px']} px")
    assert a / length < 0.01
    auto = solve_cameras(xy, vis, None, (W, H))
    a2, _ = ate(auto.cam_to_world, c2w_gt)
    ferr = abs(auto.report["focal_px"] / f_true - 1)
    print(f"KITTI self-calibrated: ATE {a2 / length:.3%}, focal {auto.report['focal_px']:.1f} px "
          f"(true {f_true:.1f}, error {ferr:.1%}, 1-sigma {auto.report['focal_sigma_rel']:.1%}), "
          f"warnings {auto.report['warnings']}")
    assert a2 / length < 0.03
    # forward driving: the focal is weakly observable, and the solver must say so
    _assert_focal_warning(auto.report, ferr)
    assert known.report["focal_sigma_rel"] == 0.0 and not _focal_warnings(known.report)


def _focal_warnings(report):
    return [w for w in report["warnings"] if "focal length poorly constrained" in w]


def _assert_focal_warning(report, ferr):
    from engine.solve.observability import FOCAL_SIGMA_WARN

    rel = report["focal_sigma_rel"]
    assert rel > 2 * FOCAL_SIGMA_WARN, rel
    assert len(_focal_warnings(report)) == 1, report["warnings"]
    # the uncertainty is of the size of the actual error (not 10x smaller)
    assert ferr < 6 * rel, (ferr, rel)


def test_kitti_forward_motion_warns_focal(shared_data):
    """The first 30 frames (straight driving): the self-calibrated focal comes with the warning
    and an uncertainty of the size of its actual error; the known focal comes with none."""
    from engine.solve.pipeline import solve_cameras

    root = shared_data / "kitti_seq1"
    if not root.is_dir():
        pytest.skip("kitti_seq1 not present")
    imgs, _, K_gt = load_kitti(root, n_frames=30)
    xy, vis = lk_tracks(imgs)
    H, W = imgs[0].shape
    f_true = K_gt[0, 0]
    auto = solve_cameras(xy, vis, None, (W, H))
    ferr = abs(auto.report["focal_px"] / f_true - 1)
    print(f"KITTI 30 frames: focal error {ferr:.1%}, 1-sigma {auto.report['focal_sigma_rel']:.1%}")
    _assert_focal_warning(auto.report, ferr)
    known = solve_cameras(xy, vis, None, (W, H), focal=f_true)
    assert known.report["focal_sigma_rel"] == 0.0 and not _focal_warnings(known.report)


@pytest.mark.slow
def test_kitti_from_the_engines_own_grid_tracks(shared_data, tmp_path):
    """The product path on a forward driving shot: ``engine track --grid 8`` then the solve.
    The tracks are short (the scene streams past) and each surface is nearly planar, so the
    rigid-body clustering leaves a fragmented background (~2 % of the sample); the solve must
    notice that and let the per-pair epipolar vote find the background, then solve the path
    (focal self-calibrated, with its warning)."""
    from engine.progress import Progress
    from engine.solve.pipeline import MIN_CLUSTER_BACKGROUND, solve_cameras
    from engine.track import track_clip
    from engine.trackfile import load_trackfile

    root = shared_data / "kitti_seq1"
    if not root.is_dir():
        pytest.skip("kitti_seq1 not present")
    _, c2w_gt, K_gt = load_kitti(root)
    d = load_trackfile(track_clip(root / "image_l", tmp_path / "t.npz", grid=8, device="cpu",
                                  progress=Progress("quiet")))
    W, H = d.image_size
    res = solve_cameras(np.asarray(d.tracks_2d), np.asarray(d.visible),
                        np.asarray(d.confidence), (W, H))
    rep = res.report
    a, length = ate(res.cam_to_world, c2w_gt)
    ferr = abs(rep["focal_px"] / K_gt[0, 0] - 1)
    print(f"KITTI grid-8 tracks: {rep['segmentation']}, {rep['n_static_candidates']} static of "
          f"{rep['n_tracks_used']}, ATE {a / length:.2%}, focal error {ferr:.1%} "
          f"(1-sigma {rep['focal_sigma_rel']:.1%})")
    assert rep["segmentation"] == "per-pair epipolar vote"
    assert rep["n_static_candidates"] >= MIN_CLUSTER_BACKGROUND * rep["n_tracks_used"] / 2
    assert a / length < 0.05
    assert _focal_warnings(rep)
