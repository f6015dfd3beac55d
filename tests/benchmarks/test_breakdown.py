"""benchmarks.breakdown: the AJ a class of tracks adds when perfect; query-frame depth errors."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.breakdown import aj, breakdown, depth_errors, gain_if_perfect

N, T, SIZE = 8, 6, (256, 256)


def _truth():
    rng = np.random.default_rng(0)
    c2w = np.repeat(np.eye(4)[None], T, 0)
    c2w[:, 0, 3] = np.linspace(0, 1, T)                      # a sideways dolly
    X = np.c_[rng.uniform(-1, 1, (N, 2)), rng.uniform(4, 8, N)]
    f = 200.0
    xy = (X[:, None, :2] - c2w[None, :, :2, 3]) / X[:, None, 2:] * f + 128     # (N, T, 2)
    vis = np.ones((N, T), bool)
    vis[0, 3:] = False
    return {"query": np.c_[np.zeros(N), xy[:, 0]], "tracks_2d": xy, "visible": vis,
            "group": np.where(np.arange(N) < 6, -1, 0), "cam_to_world": c2w,
            "tracks_3d": np.repeat(X[:, None], T, 1)}


def test_gain_of_a_perfect_class_is_zero_and_of_a_drifted_one_is_what_fixing_it_adds():
    gt = _truth()
    pred = {k: np.copy(v) for k, v in gt.items()}
    pred["tracks_2d"][4:6, 1:] += 30.0                       # two static tracks drift far
    tr, vis = pred["tracks_2d"], pred["visible"]
    base = aj(gt, tr, vis, SIZE)
    assert base < 1.0
    good, bad = np.arange(N) < 4, (np.arange(N) >= 4) & (np.arange(N) < 6)
    assert gain_if_perfect(gt, tr, vis, SIZE, good) == pytest.approx(0.0, abs=1e-12)
    assert gain_if_perfect(gt, tr, vis, SIZE, bad) == pytest.approx(1.0 - base)
    # hiding a visible point loses AJ, and restoring its visibility is counted as a gain
    vis2 = vis.copy()
    vis2[1, 2:] = False
    assert gain_if_perfect(gt, gt["tracks_2d"], vis2, SIZE, np.arange(N) == 1) > 0


def test_breakdown_classes_and_depth_error_after_the_monocular_scale():
    gt = _truth()
    pred = {k: np.copy(v) for k, v in gt.items()}
    s = 2.5                                                  # a monocular solve's free scale
    pred["cam_to_world"][:, :3, 3] *= s
    pred["tracks_3d"] *= s
    pred["tracks_3d"][2] *= 1.2                              # one static point 20 % too far
    e = depth_errors(gt, pred, gt["group"] < 0)
    assert e[2] == pytest.approx(np.log(1.2), rel=1e-9)
    assert np.allclose(np.delete(e, 2), 0.0, atol=1e-12)
    plain = np.arange(N) % 2 == 0
    r = breakdown(gt, pred, plain, SIZE)
    assert r["aj"] == pytest.approx(1.0)
    assert set(r["classes"]) == {"static plain", "static textured", "moving plain",
                                 "moving textured"}
    assert sum(c["n"] for c in r["classes"].values()) == N
    sp = r["classes"]["static plain"]
    assert sp["gain_if_perfect"] == 0.0
    assert sp["depth_err_over_10pct"] == pytest.approx(1 / 3, abs=1e-4)
    assert "depth_err_median" not in r["classes"]["moving plain"]
