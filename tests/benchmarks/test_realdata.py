"""Real-footage loaders: TAP-Vid pickles (written here), TUM RGB-D folders (written here) and the
sets in ../shared/data (skipped when absent)."""
import pickle

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from benchmarks import metrics as M  # noqa: E402
from benchmarks import realdata as R  # noqa: E402


def _example(t=5, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 255, size=(t, h, w, 3), dtype=np.uint8)
    pts = np.zeros((3, t, 2), np.float32)
    pts[0, :, 0] = (np.arange(t) + 4.5) / w   # pixel centres 4..8 in x
    pts[0, :, 1] = 10.5 / h
    pts[1] = [[20.5 / w, 5.5 / h]] * t
    pts[2] = 0.5
    occ = np.zeros((3, t), bool)
    occ[1, :2] = True           # first visible at frame 2
    occ[2, :] = True            # never visible: dropped
    return {"video": video, "points": pts, "occluded": occ}


def test_tapvid_pickle_davis_and_stacking_layouts(tmp_path):
    ex = _example()
    p = tmp_path / "davis.pkl"
    with open(p, "wb") as fh:
        pickle.dump({"walk": ex}, fh)
    (got,) = list(R.load_tapvid_pickle(p))
    assert got.name == "walk" and got.image_size == (32, 24) and got.video.shape == (5, 24, 32, 3)
    assert got.points.shape == (2, 5, 2)  # the never-visible track is dropped
    np.testing.assert_allclose(got.points[0, :, 0], np.arange(5) + 4.0, atol=1e-4)
    np.testing.assert_allclose(got.points[1, 0], [20.0, 5.0], atol=1e-4)
    np.testing.assert_allclose(got.query, [[0, 4, 10], [2, 20, 5]], atol=1e-4)
    p2 = tmp_path / "stacking.pkl"
    with open(p2, "wb") as fh:
        pickle.dump([ex, _example(seed=1)], fh)
    got = list(R.load_tapvid_pickle(p2))
    assert [g.name for g in got] == ["stacking_0000", "stacking_0001"]
    # perfect predictions score perfectly through the TAP-Vid metrics
    g = got[0]
    m = M.tapvid_metrics(g.query[:, 0], g.occluded, g.points, g.occluded, g.points,
                         image_size=g.image_size)
    assert m["average_jaccard"] == 1.0


def test_tapvid_pickle_kinetics_jpeg_bytes(tmp_path):
    ex = _example()
    ex["video"] = [cv2.imencode(".jpg", f[:, :, ::-1])[1].tobytes() for f in ex["video"]]
    p = tmp_path / "0000_of_0010.pkl"
    with open(p, "wb") as fh:
        pickle.dump([ex], fh)
    (got,) = list(R.load_tapvid_pickle(p))
    assert got.video.shape == (5, 24, 32, 3) and got.video.dtype == np.uint8
    out = R.materialise_frames(got, tmp_path / "clip")
    assert len(list((out / "frames").glob("*.png"))) == 5


def test_tapvid_pickle_rejects_bad_layout(tmp_path):
    p = tmp_path / "bad.pkl"
    with open(p, "wb") as fh:
        pickle.dump({"x": {"video": np.zeros((2, 4, 4, 3), np.uint8)}}, fh)
    with pytest.raises(ValueError, match="points"):
        list(R.load_tapvid_pickle(p))


def test_tum_sequence_association(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_toy"
    (root / "rgb").mkdir(parents=True)
    stamps = [100.000, 100.033, 100.066, 100.100]
    lines = ["# color images", "# timestamp filename"]
    for s in stamps:
        cv2.imwrite(str(root / "rgb" / f"{s:.6f}.png"), np.zeros((48, 64, 3), np.uint8))
        lines.append(f"{s:.6f} rgb/{s:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(lines) + "\n")
    gt = ["# timestamp tx ty tz qx qy qz qw"]
    for i, s in enumerate([100.004, 100.031, 100.200]):  # no pose near 100.066 / 100.100
        a = 0.1 * i
        gt.append(f"{s:.4f} {i} 0 0 0 {np.sin(a / 2):.9f} 0 {np.cos(a / 2):.9f}")
    (root / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    seq = R.load_tum_sequence(root)
    assert [p.name for p in seq.frames] == ["100.000000.png", "100.033000.png"]
    np.testing.assert_allclose(seq.cam_to_world[:, :3, 3], [[0, 0, 0], [1, 0, 0]])
    ang = M.rotation_angle_deg(seq.cam_to_world[1, :3, :3])
    assert ang == pytest.approx(np.degrees(0.1))
    assert seq.K[0, 0, 0] == pytest.approx(517.3) and seq.image_size == (64, 48)


def test_quaternion_convention():
    r = R.quat_to_rot(np.array([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]))  # 90° about z
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_kitti_seq1(shared_data):
    if not (shared_data / "kitti_seq1").is_dir():
        pytest.skip("kitti_seq1 absent")
    seq = R.load_kitti_sequence(shared_data / "kitti_seq1")
    assert len(seq.frames) == 51 and seq.cam_to_world.shape == (51, 4, 4)
    np.testing.assert_allclose(seq.cam_to_world[0], np.eye(4), atol=1e-6)
    assert seq.K[0, 0, 0] == pytest.approx(707.0912) and seq.image_size == (1226, 370)
    assert 50 < M.path_length(seq.cam_to_world) < 70  # "a car driving ~60 m straight"
    # the car drives along +z (OpenCV forward)
    assert seq.cam_to_world[-1, 2, 3] > 50


def test_badja(shared_data):
    root = shared_data / "badja_davis"
    if not root.is_dir():
        pytest.skip("badja_davis absent")
    for name, n_frames, has_seg in (("dog", 60, True), ("bear", 82, False)):
        ex = R.load_badja(root, name)
        n, t = ex.occluded.shape
        assert t == n_frames and ex.image_size == (854, 480) and n > 5
        assert (ex.frames is not None) or (ex.video_path is not None)
        qf = ex.query[:, 0].astype(int)
        assert not ex.occluded[np.arange(n), qf].any()
        perfect = R.badja_metrics(ex, ex.points)
        assert perfect["acc_3px"] == 1.0 and perfect["n_eval"] > 10
        off = ex.points + np.array([2.0, 0.0], np.float32)
        m = R.badja_metrics(ex, off)
        assert m["acc_3px"] == 1.0  # 2 px is inside both thresholds
        far = R.badja_metrics(ex, ex.points + 500.0)
        assert far["acc_3px"] == 0.0
        if has_seg:
            assert perfect["segA"] == 1.0 and m["segA"] == 1.0 and far["segA"] == 0.0
        else:  # bear carries no segmentation areas: segA is undefined
            assert np.isnan(perfect["segA"])


def test_mgtv_corners(shared_data):
    root = shared_data / "mgtv_corners"
    if not root.is_dir():
        pytest.skip("mgtv_corners absent")
    ex = R.load_mgtv_corners(root)
    assert ex.points.shape == (4, 49, 2) and ex.image_size == (1920, 1080)
    np.testing.assert_allclose(ex.query[0], [0, 503.894, 639.318], atol=1e-3)
    targets = np.loadtxt(root / "target_points.txt", dtype=str)
    assert targets[0] == "0"
