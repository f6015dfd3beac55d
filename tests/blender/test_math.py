"""The Blender layer's pure-numpy pieces (no bpy needed): lens conversion, marker coordinates,
robust rigid fitting, track selection."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

OPS = Path(__file__).resolve().parents[2] / "operators"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"wt_{name}", OPS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cm = _load("camera_math")
rigid = _load("rigid")
selection = _load("selection")


@pytest.mark.parametrize("W,H", [(1920, 1080), (1080, 1920), (640, 640)])
def test_lens_roundtrip(W, H):
    K = np.array([[1500.0, 0, W / 2 - 0.5 + 17.3], [0, 1500.0, H / 2 - 0.5 - 9.1], [0, 0, 1]])
    p = cm.lens_from_K(K, W, H)
    assert p["lens"] == pytest.approx(1500 * 36 / max(W, H))
    assert np.allclose(cm.K_from_lens(p["lens"], p["shift_x"], p["shift_y"], W, H), K)
    # principal point at the image centre -> no shift
    Kc = K.copy()
    Kc[:2, 2] = [(W - 1) / 2, (H - 1) / 2]
    pc = cm.lens_from_K(Kc, W, H)
    assert pc["shift_x"] == pytest.approx(0) and pc["shift_y"] == pytest.approx(0)


def test_marker_coordinates():
    xy = np.array([[-0.5, -0.5], [99.5, 49.5], [49.5, 24.5]])
    co = cm.pixels_to_marker(xy, 100, 50)
    assert np.allclose(co, [[0, 1], [1, 0], [0.5, 0.5]])  # top-left corner, bottom-right corner, centre
    assert np.allclose(cm.marker_to_pixels(co, 100, 50), xy)
    assert cm.fps_to_blender(29.97) == (30, pytest.approx(30 / 29.97))


def test_robust_kabsch_with_outliers():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(60, 3))
    a = 0.7
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    t = np.array([1.0, -2.0, 0.5])
    Q = P @ R.T + t
    Q[:18] += rng.normal(0, 2.0, (18, 3))  # 30 % gross outliers
    R2, t2, inl = rigid.robust_kabsch(P, Q)
    assert np.abs(R2 - R).max() < 1e-6 and np.abs(t2 - t).max() < 1e-6
    assert not inl[:18].any() and inl[18:].all()
    assert rigid.robust_kabsch(P[:2], Q[:2]) is None


def test_region_motion_holds_unfitted_frames():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(10, 3))
    T = 5
    X = np.stack([B + [k, 0, 0] for k in range(T)], 1)
    vis = np.ones((10, T), bool)
    vis[:, 2] = False  # nothing visible at frame 2
    A, ok = rigid.region_motion(X, vis, ref_t=0)
    assert ok.tolist() == [True, True, False, True, True]
    assert np.allclose(A[3, :3, 3], [3, 0, 0]) and np.allclose(A[2], A[1]) | np.allclose(A[2], A[3])


class _D:
    def __init__(self, n=200, T=6, seed=0):
        rng = np.random.default_rng(seed)
        self.tracks_2d = rng.uniform(0, 100, (n, T, 2)).astype(np.float32)
        self.visible = rng.random((n, T)) > 0.2
        self.confidence = rng.random((n, T)).astype(np.float32)
        self.tracks_3d = rng.normal(size=(n, T, 3)).astype(np.float32)
        self.tracks_3d[:20] = np.nan
        self.query = np.c_[np.zeros(n), self.tracks_2d[:, 0]].astype(np.float32)
        self.group = np.where(np.arange(n) < 100, -1, 0).astype(np.int32)
        self.n_tracks = n


def test_selection():
    d = _D()
    best = selection.most_reliable(d, 10)
    score = selection.reliability(d)
    assert len(best) == 10 and score[best].min() >= np.sort(score)[-10]
    assert not np.isin(np.arange(20), best).any()  # no 3D -> never reliable
    spread = selection.most_reliable(d, 10, spread_px=15)
    q = d.query[spread, 1:]
    dist = np.linalg.norm(q[:, None] - q[None], axis=-1) + np.eye(len(q)) * 1e9
    assert dist.min() >= 15
    assert (d.group[selection.most_reliable(d, 10, group=0)] == 0).all()
    near = selection.in_circle(d, 3, (50, 50), 20)
    xy = d.tracks_2d[near, 3]
    assert (np.linalg.norm(xy - 50, axis=1) <= 20).all() and d.visible[near, 3].all()
    assert len(selection.in_circle(d, 3, (50, 50), 20, max_tracks=3)) == 3
    box = selection.in_rect(d, 1, 10, 10, 30, 40)
    assert set(box) == set(np.flatnonzero(d.visible[:, 1] & (d.tracks_2d[:, 1, 0] >= 10) & (d.tracks_2d[:, 1, 0] <= 30)
                                          & (d.tracks_2d[:, 1, 1] >= 10) & (d.tracks_2d[:, 1, 1] <= 40)))


def test_rigid_groups_leave_out_the_nonrigid_group():
    d = _D()
    d.group = np.repeat(np.array([-1, 0, 1, 2], np.int32), [20, 40, 60, 80])
    assert selection.rigid_groups(d) == [2, 1, 0]              # ground truth: all rigid
    d.metadata = {"solve": {"lift": {"groups": [{"id": 0, "kind": "rigid"},
                                                {"id": 1, "kind": "rigid"},
                                                {"id": 2, "kind": "nonrigid"}]}}}
    assert selection.rigid_groups(d) == [1, 0]                  # largest first
    assert selection.group_lines(d) == ["Group 0: rigid object, 40 tracks",
                                        "Group 1: rigid object, 60 tracks",
                                        "Group 2: non-rigid, 80 tracks"]
    d.group = np.full(200, -1, np.int32)
    assert selection.rigid_groups(d) == [] and selection.group_lines(d) == []
