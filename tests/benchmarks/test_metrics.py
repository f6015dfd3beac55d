"""Metrics against hand-computed values and invariances (TAP-Vid 2D, 3D world, camera, cost)."""
import sys

import numpy as np
import pytest

from benchmarks import metrics as M
from benchmarks import realdata as R


# ------------------------------------------------------------------------------------ TAP-Vid
def _tiny_case():
    """2 tracks x 4 frames; distances and flags chosen so every count can be done by hand."""
    qf = np.array([0, 1])
    gt = np.zeros((2, 4, 2))
    gt[0] = 10.0
    gt[1] = 50.0
    gt_occ = np.array([[False, False, False, True], [True, False, False, False]])
    pr = gt.copy()
    pr[0, 1] = [10.5, 10]   # 0.5 px
    pr[0, 2] = [13.0, 10]   # 3 px
    pr[0, 3] = [10.0, 10]   # gt occluded, predicted visible
    pr[1, 2] = [50.0, 50]   # exact but predicted occluded
    pr[1, 3] = [60.0, 50]   # 10 px
    pr_occ = np.array([[False, False, False, False], [True, False, True, False]])
    return qf, gt_occ, gt, pr_occ, pr


def test_tapvid_hand_computed():
    qf, gt_occ, gt, pr_occ, pr = _tiny_case()
    m = M.tapvid_metrics(qf, gt_occ, gt, pr_occ, pr, "first")
    assert m["n_eval"] == 5
    assert m["occlusion_accuracy"] == pytest.approx(3 / 5)
    want_pts = {1: 0.5, 2: 0.5, 4: 0.75, 8: 0.75, 16: 1.0}
    want_jac = {1: 1 / 7, 2: 1 / 7, 4: 1 / 3, 8: 1 / 3, 16: 3 / 5}
    for thr in M.PIXEL_THRESHOLDS:
        assert m[f"pts_within_{thr}"] == pytest.approx(want_pts[thr])
        assert m[f"jaccard_{thr}"] == pytest.approx(want_jac[thr])
    assert m["average_pts_within_thresh"] == pytest.approx(0.7)
    assert m["average_jaccard"] == pytest.approx((2 / 7 + 2 / 3 + 3 / 5) / 5)


def test_tapvid_rescale_to_256_and_nan_predictions():
    qf, gt_occ, gt, pr_occ, pr = _tiny_case()
    # A 512x128 image: x errors halve, y errors double in 256x256 units.
    m = M.tapvid_metrics(qf, gt_occ, gt, pr_occ, pr, "first", image_size=(512, 128))
    assert m["pts_within_2"] == pytest.approx(0.75)  # the 3-px x error becomes 1.5
    pr_y = gt.copy()
    pr_y[..., 1] += 0.75  # 1.5 px in 256 units: inside 2 px, outside 1 px
    m = M.tapvid_metrics(qf, gt_occ, gt, gt_occ, pr_y, "first", image_size=(512, 128))
    assert m["pts_within_1"] == 0 and m["pts_within_2"] == 1
    pr_nan = pr.copy()
    pr_nan[0, 1] = np.nan
    m = M.tapvid_metrics(qf, gt_occ, gt, pr_occ, pr_nan, "first")
    assert m["pts_within_16"] == pytest.approx(0.75)


def test_tapvid_query_modes_and_perfect():
    qf, gt_occ, gt, _, _ = _tiny_case()
    m = M.tapvid_metrics(qf, gt_occ, gt, gt_occ, gt, "first")
    assert m["average_jaccard"] == 1 and m["occlusion_accuracy"] == 1
    mask = M.tapvid_eval_mask(np.array([1]), 4, "strided")
    assert mask.tolist() == [[True, False, True, True]]
    mask = M.tapvid_eval_mask(np.array([1]), 4, "first")
    assert mask.tolist() == [[False, False, True, True]]
    with pytest.raises(ValueError):
        M.tapvid_eval_mask(np.array([0]), 4, "nope")


# ------------------------------------------------------------------------------- poses helpers
def _rot(axis, ang):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * k @ k


def _orbit(t=20):
    """A hand-held orbit around the origin looking at it (OpenCV axes), radius 5."""
    c2w = np.tile(np.eye(4), (t, 1, 1))
    for i in range(t):
        a = 0.05 * i
        c = np.array([5 * np.sin(a), -1.0 + 0.1 * np.sin(3 * a), -5 * np.cos(a)])
        z = -c / np.linalg.norm(c)
        x = np.cross([0, 1, 0], z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        c2w[i, :3, :3] = np.stack([x, y, z], 1)
        c2w[i, :3, 3] = c
    return c2w


def _sim3_of(c2w, s, r, t):
    return M.Sim3(s, r, t).apply_poses(c2w)


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    r = _rot([1, 2, 3], 0.7)
    y = 2.5 * x @ r.T + [1, -2, 3]
    s = M.umeyama(x, y)
    assert s.s == pytest.approx(2.5)
    np.testing.assert_allclose(s.R, r, atol=1e-10)
    np.testing.assert_allclose(s.apply(x), y, atol=1e-10)


def test_camera_metrics_invariances_and_known_errors():
    gt = _orbit()
    k = np.tile(np.diag([300.0, 300.0, 1.0]), (len(gt), 1, 1))
    m = M.camera_metrics(gt, gt, k, k)
    assert m["ate"] < 1e-12 and m["rpe_rot_deg"] < 1e-6 and m["success"] == 1
    # The same trajectory in another similarity frame scores zero error and recovers the scale.
    pred = _sim3_of(gt, 0.3, _rot([0, 1, 1], 1.1), np.array([4.0, 0, -2]))
    m = M.camera_metrics(pred, gt, k, k)
    assert m["ate"] < 1e-9 and m["rpe_trans"] < 1e-9 and m["rpe_rot_deg"] < 1e-5
    assert m["sim3_scale"] == pytest.approx(1 / 0.3)
    # Known relative-pose perturbation: every step gets an extra 0.5 deg rotation.
    delta = np.eye(4)
    delta[:3, :3] = _rot([0, 0, 1], np.radians(0.5))
    rel = np.linalg.inv(gt[:-1]) @ gt[1:]
    p = [gt[0]]
    for r_ in rel:
        p.append(p[-1] @ r_ @ delta)
    r = M.rpe(np.array(p), gt)
    assert r["rpe_rot_deg"] == pytest.approx(0.5, abs=1e-6) and r["rpe_trans"] < 1e-9
    # Known centre perturbation without alignment: ATE = offset exactly.
    off = gt.copy()
    off[:, :3, 3] += [0.0, 0.02, 0.0]
    assert M.ate(off, gt, M.Sim3.identity())["ate"] == pytest.approx(0.02)
    # Focal: 10 % too long everywhere.
    f = M.focal_error(k * np.array([1.1, 1.1, 1])[:, None], k)
    assert f[1] == pytest.approx(0.1)


def test_align_sim3_straight_dolly_uses_orientation():
    # Collinear centres: Umeyama leaves the roll about the path free; orientations fix it.
    t = 10
    gt = np.tile(np.eye(4), (t, 1, 1))
    gt[:, 2, 3] = np.arange(t) * 0.5
    r = _rot([0.2, 1, 0.3], 0.8)
    pred = _sim3_of(gt, 2.0, r, np.array([1.0, 2, 3]))
    al = M.align_sim3(pred, gt)
    np.testing.assert_allclose(al.R, r.T, atol=1e-9)
    assert al.s == pytest.approx(0.5)
    # Tripod (no travel): rotation still aligned, scale left at 1.
    trip = np.tile(np.eye(4), (t, 1, 1))
    for i in range(t):
        trip[i, :3, :3] = _rot([0, 1, 0], 0.02 * i)
    al = M.align_sim3(_sim3_of(trip, 1.0, r, np.zeros(3)), trip)
    np.testing.assert_allclose(al.R, r.T, atol=1e-9)
    m = M.camera_metrics(_sim3_of(trip, 1.0, r, np.zeros(3)), trip, np.tile(np.eye(3), (t, 1, 1)),
                         np.tile(np.eye(3), (t, 1, 1)))
    assert np.isnan(m["ate_pct"]) and m["success"] == 1


def test_camera_metrics_unsolved_frames():
    gt = _orbit(10)
    k = np.tile(np.diag([300.0, 300.0, 1.0]), (10, 1, 1))
    pred = gt.copy()
    pred[7:] = np.nan
    m = M.camera_metrics(pred, gt, k, k)
    assert m["solved_fraction"] == pytest.approx(0.7) and m["ate"] < 1e-12 and m["success"] == 0


# ----------------------------------------------------------------------------------- 3D world
def _world_case():
    rng = np.random.default_rng(1)
    gt_c2w = _orbit(12)
    n, t = 40, 12
    k = np.tile(np.array([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]]), (t, 1, 1))
    pts = rng.uniform(-1, 1, size=(n, 1, 3)).repeat(t, axis=1)
    group = np.where(np.arange(n) < 30, -1, 0)
    pts[30:] += np.linspace(0, 1, t)[None, :, None] * np.array([0.5, 0, 0])  # a moving object
    vis = np.ones((n, t), bool)
    vis[0, 5:] = False
    qf = np.zeros(n, int)
    return gt_c2w, k, pts, vis, qf, group


def test_world_track_metrics_invariance_and_known_error():
    gt_c2w, k, pts, vis, qf, group = _world_case()
    s = M.Sim3(0.4, _rot([1, 0, 1], 0.9), np.array([2.0, 1, 0]))
    inv_r = s.R.T
    inv = M.Sim3(1 / s.s, inv_r, -inv_r @ s.t / s.s)  # maps ground truth into the predicted frame
    pred_c2w = inv.apply_poses(gt_c2w)
    pred_pts = inv.apply(pts)
    m = M.world_track_metrics(pts, vis, gt_c2w, k, pred_pts, pred_c2w, qf, group)
    for sub in ("all", "static", "dynamic"):
        assert m[f"apd3d_{sub}"] == pytest.approx(1.0)
        assert m[f"median_err3d_{sub}"] < 1e-9
    assert m["n3d_all"] == 40 * 11 - 7  # frames after query, visible
    # Move the dynamic points' prediction 0.05 m (in GT units) off: within δ px when
    # 0.05 < δ·z/f, z the true depth (3-7 m here), f = 200 px.
    wrong = pts.copy()
    wrong[30:] += [0.0, 0.05, 0.0]
    m = M.world_track_metrics(pts, vis, gt_c2w, k, inv.apply(wrong), pred_c2w, qf, group)
    assert m["apd3d_static"] == pytest.approx(1.0)
    _, z = M.project(pts[30:, 1:], gt_c2w[1:], k[1:])
    want = np.mean([np.mean(0.05 < d * z / 200.0) for d in (1, 2, 4, 8, 16)])
    assert 0.4 < want < 0.8  # the case really splits between thresholds
    assert m["apd3d_dynamic"] == pytest.approx(want)
    assert m["median_err3d_dynamic"] == pytest.approx(0.05)
    # Missing 3D counts as a miss.
    nan_pts = pred_pts.copy()
    nan_pts[:20] = np.nan
    m = M.world_track_metrics(pts, vis, gt_c2w, k, nan_pts, pred_c2w, qf, group)
    assert m["coverage3d_static"] == pytest.approx(10 / 30, abs=0.02)


def test_reprojection_error_self_consistent():
    gt_c2w, k, pts, vis, qf, group = _world_case()
    px, z = M.project(pts, gt_c2w, k)
    assert (z > 0).all()
    assert M.reprojection_error(px, vis, pts, gt_c2w, k) < 1e-9
    assert M.reprojection_error(px + [3.0, 4.0], vis, pts, gt_c2w, k) == pytest.approx(5.0)


# ---------------------------------------------------------------------- evo test trajectories
def _traj(shared_data, name):
    p = shared_data / "trajectories" / name
    if not p.is_file():
        pytest.skip(f"{p} absent")
    return p


def test_evo_kitti_trajectories(shared_data):
    gt = R.read_kitti_trajectory(_traj(shared_data, "evo_KITTI_00_gt.txt"))
    est = R.read_kitti_trajectory(_traj(shared_data, "evo_KITTI_00_ORB.txt"))
    assert gt.shape == est.shape and gt.shape[1:] == (4, 4)
    k = np.tile(np.eye(3), (len(gt), 1, 1))
    assert M.camera_metrics(gt, gt, k, k)["ate"] < 1e-9
    moved = _sim3_of(gt, 3.0, _rot([1, 1, 0], 0.4), np.array([10.0, 0, 5]))
    m = M.camera_metrics(moved, gt, k, k)
    assert m["ate"] < 1e-6 * m["path_length"] and m["sim3_scale"] == pytest.approx(1 / 3)
    m = M.camera_metrics(est, gt, k, k)
    # ORB-SLAM on KITTI 00: metres of drift over a ~3.7 km loop, well under 1 % of the path.
    assert 0.1 < m["ate"] < 40 and m["ate_pct"] < 1.0 and m["path_length"] > 3000


def test_evo_tum_and_euroc_trajectories(shared_data):
    t_gt, gt = R.read_tum_trajectory(_traj(shared_data, "evo_freiburg1_xyz-groundtruth.txt"))
    t_est, est = R.read_tum_trajectory(_traj(shared_data, "evo_freiburg1_xyz-rgbdslam.txt"))
    pairs = R.associate(t_est, t_gt, 0.01)
    assert len(pairs) > 0.9 * len(t_est)
    assert np.all(np.abs(t_est[pairs[:, 0]] - t_gt[pairs[:, 1]]) < 0.01)
    g, e = gt[pairs[:, 1]], est[pairs[:, 0]]
    np.testing.assert_allclose(np.einsum("tji,tjk->tik", g[:, :3, :3], g[:, :3, :3]),
                               np.tile(np.eye(3), (len(g), 1, 1)), atol=1e-6)
    k = np.tile(np.eye(3), (len(g), 1, 1))
    m = M.camera_metrics(e, g, k, k)
    assert 0.001 < m["ate"] < 0.1  # centimetre-level RGB-D SLAM on a desk-sized scene
    t_e, eu = R.read_euroc_groundtruth(_traj(shared_data, "evo_V102_groundtruth.csv"))
    t_v, v = R.read_tum_trajectory(_traj(shared_data, "evo_V102.txt"))
    assert eu.shape[0] > 1000 and np.isfinite(eu).all()
    pairs = R.associate(t_v, t_e, 0.01)
    assert len(pairs) > 0.5 * len(t_v)
    # The V102 estimate vs its ground truth after Sim(3): a drone in a room, under 1 m.
    m = M.camera_metrics(v[pairs[:, 0]], eu[pairs[:, 1]], np.tile(np.eye(3), (len(pairs), 1, 1)),
                         np.tile(np.eye(3), (len(pairs), 1, 1)))
    assert m["ate"] < 1.0


def test_associate_greedy():
    pairs = R.associate(np.array([0.0, 1.0, 2.0]), np.array([0.005, 1.5, 1.99, 3.0]), 0.02)
    assert pairs.tolist() == [[0, 0], [2, 2]]


# ------------------------------------------------------------------------------------- cost
def test_run_measured_reports_child_peak_rss(tmp_path):
    code = "import numpy as np; a = np.ones(200 * 2**20 // 8); print(a.sum())"
    c = M.run_measured([sys.executable, "-c", code], point_frames=1000,
                       log_path=str(tmp_path / "log"))
    assert c.returncode == 0
    assert c.peak_rss_mb > 200 and c.wall_s > 0 and c.throughput > 0
    c = M.run_measured([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)
    assert c.returncode != 0 and c.wall_s < 3


def test_cost_meter():
    with M.CostMeter(point_frames=10) as cm:
        a = np.ones(50 * 2**20 // 8)
        a.sum()
    assert cm.cost.wall_s > 0 and cm.cost.peak_rss_mb > 40
