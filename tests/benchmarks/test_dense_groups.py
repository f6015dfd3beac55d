"""The dense rigid-group benchmark's scoring: tracks labelled by the ground truth's geometry
(static scene, each object's rigid motion, or unexplained), and groups scored against them."""
from __future__ import annotations

import numpy as np

from benchmarks.dense_groups import label_tracks, rotation_rate, score, table

T, W, H, F = 6, 64, 48, 50.0
CX, CY = (W - 1) / 2, (H - 1) / 2
CENTRE = np.array([-1.5, 0.0, 5.0])      # the object's centre, world (on the plane z = 5)
RATE = 5.0                               # the object turns this many degrees per frame


def _rz(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def _scene():
    """A camera sliding along x over the plane z = 5 (camera axes = world axes, so the depth is
    5 everywhere), an object left of u = 20 that turns about z and slides along y."""
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[:, 0, 3] = 0.1 * np.arange(T)
    K = np.tile(np.array([[F, 0, CX], [0, F, CY], [0, 0, 1.0]]), (T, 1, 1))

    def lift(u, v):             # frame-0 pixels -> world points on the plane
        return np.stack([(u - CX) / F * 5, (v - CY) / F * 5, np.full_like(u, 5.0)], -1)

    def moved(X0, obj):         # (n, 3) -> (n, T, 3)
        if not obj:
            return np.repeat(X0[:, None], T, 1)
        return np.stack([(X0 - CENTRE) @ _rz(RATE * t).T + CENTRE + [0, 0.05 * t, 0]
                         for t in range(T)], 1)

    def project(X):             # (n, T, 3) -> (n, T, 2)
        xc = X - c2w[None, :, :3, 3]
        return np.stack([xc[..., 0] / xc[..., 2] * F + CX, xc[..., 1] / xc[..., 2] * F + CY], -1)

    gu = np.array([4.0, 12.0, 16.0, 8.0, 40.0, 50.0, 30.0])
    gv = np.array([10.0, 20.0, 30.0, 36.0, 12.0, 30.0, 40.0])
    g_obj = gu < 20
    X0 = lift(gu, gv)
    gt3d = np.where(g_obj[:, None, None], moved(X0, True), moved(X0, False))
    gt = {"cam_to_world": c2w, "K": K, "depth": np.full((T, H, W), 5.0),
          "tracks_3d": gt3d, "group": np.where(g_obj, 0, -1)}
    u, v = np.meshgrid(np.arange(0, W, 4.0), np.arange(0, H, 4.0))
    u, v = u.ravel(), v.ravel()
    obj = u < 20
    X = lift(u, v)
    X3 = np.where(obj[:, None, None], moved(X, True), moved(X, False))
    xy = project(X3)
    xy[0] += np.linspace(0, 25, T)[:, None]       # a gross tracker error: no model explains it
    query = np.c_[np.zeros(len(u)), u, v]
    return gt, query, xy, np.ones((len(u), T), bool), obj, X3


def test_tracks_are_labelled_by_the_true_geometry():
    gt, query, xy, vis, obj, _ = _scene()
    label, err = label_tracks(gt, query, xy, vis, tol=1.0, chunk=7)
    assert label[0] == -99 and err[0] > 1.0
    np.testing.assert_array_equal(label[1:], np.where(obj[1:], 0, -1))
    assert np.max(err[1:]) < 1e-6
    # a track seen in frame 0 only fits every model: still one label, no error
    vis1 = vis.copy()
    vis1[5, 1:] = False
    assert label_tracks(gt, query, xy, vis1, tol=1.0)[0][5] in (-1, 0)


def test_groups_are_scored_against_the_labels():
    gt, query, xy, vis, obj, X3 = _scene()
    assert abs(rotation_rate(X3[obj]) - RATE) < 1e-6
    assert abs(rotation_rate(X3[~obj])) < 1e-6
    group = np.where(obj, 0, -1)
    group[0] = 1                                  # the unexplained track: non-rigid
    groups = [{"id": 0, "kind": "rigid"}, {"id": 1, "kind": "nonrigid"}]
    res = score(gt, query, xy, vis, group, X3, groups, tol=1.0)
    n_obj = int(obj[1:].sum())
    assert res["labels"] == {"unexplained": 1, "static": int((~obj).sum()), "object 0": n_obj}
    assert res["objects"] == [{"object": 0, "tracks": n_obj, "in_rigid": 1.0, "main_group": 0,
                               "in_main_group": 1.0, "true_rate_deg": RATE}]
    assert res["groups"] == [{"group": 0, "tracks": n_obj,
                              "labels": {"object 0": n_obj}, "rate_deg": RATE,
                              "closest_object": 0}]
    t = table(res)
    assert f"| 0 | {n_obj} | 100.0% | 100.0% (0) | 5.00 |" in t
    assert f"| 0 | {n_obj} | object 0 {n_obj} | 5.00 (0) |" in t


def test_a_clip_without_depth_maps_is_refused(tmp_path, capsys):
    """The bundled sample's ground truth has no depth maps: the labels cannot be made."""
    from pathlib import Path

    from benchmarks.dense_groups import main

    sample = Path(__file__).resolve().parents[2] / "samples" / "sample"
    assert main(["--clip", str(sample), "--out", str(tmp_path)]) == 2
    assert "no depth maps" in capsys.readouterr().err
    assert main(["--clip", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
