"""Triangulation and Gauss-Newton point refinement (engine/solve/triangulate.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_synth import make_scene  # noqa: E402

import engine.solve.triangulate as tri  # noqa: E402


def test_refined_points_reach_the_noise_and_blocks_do_not_change_them(monkeypatch):
    sc = make_scene("orbit", T=24, n_points=2600, W=320, H=240, seed=7, outlier_frac=0.0,
                    noise=0.3)
    vis = sc["visible"]
    xy = np.nan_to_num(sc["tracks_2d"].astype(np.float64))
    K, c2w = sc["K"], sc["c2w"]
    X0, _ = tri.triangulate_rays(xy, vis, K, c2w)
    X0 += np.random.default_rng(0).normal(0, 0.05, X0.shape)    # a poor start
    assert len(X0) > 2 * tri._BLOCK                              # several blocks, one partial
    X = tri.refine_points(X0, xy, vis, K, c2w)
    _, rms0 = tri.reprojection_errors(X0, xy, vis, K, c2w)
    _, rms = tri.reprojection_errors(X, xy, vis, K, c2w)
    ok = vis.sum(1) >= 3
    assert np.median(rms[ok]) < 0.45 < 1.0 < np.median(rms0[ok])     # noise: 0.3 px per axis
    monkeypatch.setattr(tri, "_BLOCK", 10 ** 9)                  # all points at once
    assert np.array_equal(X, tri.refine_points(X0, xy, vis, K, c2w), equal_nan=True)


def test_vector_norm_is_numpys_norm_bit_for_bit():
    from engine.solve.camera import vector_norm

    rng = np.random.default_rng(3)
    for k in (2, 3):
        v = rng.normal(0, 40, (5000, 7, k))
        v[0, 0, 0], v[1, 1, -1], v[2, 2, 0] = np.nan, np.inf, 1e-300
        np.testing.assert_array_equal(vector_norm(v), np.linalg.norm(v, axis=-1))


def test_camera_coords_equal_one_product_per_point_and_frame():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(4)
    X = rng.normal(0, 6, (3000, 3))
    C = rng.normal(0, 2, (40, 3))
    R = Rotation.random(40, random_state=5).as_matrix()
    stacked = np.matmul((X[:, None, :] - C[None])[:, :, None, :], R[None])[:, :, 0, :]
    np.testing.assert_array_equal(tri._camera_coords(X, R, C), stacked)
    # the rotation blocks of (T, 4, 4) cameras, a view with rows 4 apart, as the callers pass
    c2w = np.zeros((40, 4, 4))
    c2w[:, :3, :3], c2w[:, :3, 3] = R, C
    stacked = np.matmul((X[:, None, :] - C[None])[:, :, None, :], c2w[None, :, :3, :3])[:, :, 0, :]
    np.testing.assert_array_equal(tri._camera_coords(X, c2w[:, :3, :3], C), stacked)
