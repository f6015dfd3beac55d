"""The static fit's depth scan (engine/refine/static.py): the blocked projections and costs equal
the one-pass computation they replaced, bit for bit, and the projection matches the camera
model."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_synth import make_scene  # noqa: E402

from engine.refine.static import (_best_depth, _project_many, _ray_costs,  # noqa: E402
                                  _scan_cost, fit_static, ray_candidates,
                                  ray_line_distances)
from engine.solve.camera import project, to_cameras  # noqa: E402


def _one_pass(X, c2w, K):
    """The projection as one pass over all of ``X`` (..., 3) (the code before blocking)."""
    xc = to_cameras(X, c2w)
    z = xc[..., 2]
    inv = np.full(z.shape, np.nan)
    np.divide(1.0, z, out=inv, where=z > 1e-9)
    uv = np.empty(z.shape + (2,))
    for i in (0, 1):
        np.multiply(xc[..., i], inv, out=uv[..., i])
        uv[..., i] *= K[:, i, i]
        uv[..., i] += K[:, i, 2]
    return uv, z


def _scene():
    sc = make_scene("orbit", T=16, n_points=300, W=320, H=240, seed=5, outlier_frac=0.0)
    rng = np.random.default_rng(2)
    xy = sc["true_2d"].astype(np.float64) + rng.normal(0, 0.3, sc["true_2d"].shape)
    drift = rng.random(len(xy)) < 0.3
    xy[drift, 8:] += 6.0                 # a drifted half-track: the truncation must hold
    vis = sc["visible"].copy()
    t = np.argmax(vis, axis=1)
    q = np.stack([t, xy[np.arange(len(xy)), t, 0], xy[np.arange(len(xy)), t, 1]], 1)
    return sc, xy, vis, q


def test_blocked_projection_equals_one_pass_and_the_camera_model():
    sc, _, _, q = _scene()
    c2w, K = sc["c2w"].astype(np.float64), sc["K"].astype(np.float64)
    X, _, _, _ = ray_candidates(q, c2w, K, (0.5, 40.0))             # (n, 48, 3)
    uv, z = _project_many(X, c2w, K)
    uv1, z1 = _one_pass(X, c2w, K)
    assert np.array_equal(uv, uv1, equal_nan=True) and np.array_equal(z, z1)
    for t in (0, 7, 15):
        ref, zr = project(c2w[t], K[t], X[:, 5, :])
        front = zr > 1e-9
        assert np.allclose(uv[:, 5, t][front], ref[front], atol=1e-9)
        assert np.isnan(uv[:, 5, t][~front]).all()


def test_depth_scan_costs_equal_the_one_pass_scan():
    sc, xy, vis, q = _scene()
    c2w, K = sc["c2w"].astype(np.float64), sc["K"].astype(np.float64)
    obs = np.where(vis[..., None], xy, np.nan)
    X, depths, C, rays = ray_candidates(q, c2w, K, (0.5, 40.0))
    cap = 2.5 ** 2
    full = _scan_cost(_one_pass(X, c2w, K)[0], obs, cap)
    blocked = _ray_costs(C, rays, np.broadcast_to(depths, (len(q), len(depths))), c2w, K, obs, cap)
    assert np.array_equal(full, blocked)
    # per-track depths (the fine scan) the same way
    fine = np.geomspace(depths[3], depths[9], 17) * np.linspace(0.9, 1.1, len(q))[:, None]
    Xf = C[:, None] + fine[..., None] * rays[:, None]
    assert np.array_equal(_scan_cost(_one_pass(Xf, c2w, K)[0], obs, cap),
                          _ray_costs(C, rays, fine, c2w, K, obs, cap))
    # and the fit finds the true points of the tracks that did not drift
    Xs, inl, _ = fit_static(xy, vis, q, c2w, K, (0.5, 40.0), 2.5)
    true = sc["tracks_3d"][:, 0]
    err = np.linalg.norm(Xs - true, axis=1) / np.linalg.norm(true - c2w[0, :3, 3], axis=1)
    assert np.median(err) < 0.01
    assert np.array_equal(_best_depth(full, cap), _best_depth(blocked, cap))


def test_ray_line_distance_bounds_every_point_of_the_ray():
    """The distance of an observation to its query ray's image line is the least distance to
    the projection of any point of the ray, so it bounds the static fit's residuals from below
    (the rigid-group fits skip tracks with too few frames near that line)."""
    sc, xy, vis, q = _scene()
    c2w, K = sc["c2w"].astype(np.float64), sc["K"].astype(np.float64)
    obs = np.where(vis[..., None], xy, np.nan)
    d = ray_line_distances(obs, q, c2w, K)
    assert d.shape == vis.shape
    assert np.isnan(d[~vis]).all() and np.isfinite(d[vis]).all()
    qt = q[:, 0].astype(int)
    on_query = vis[np.arange(len(q)), qt]
    assert (d[np.arange(len(q)), qt][on_query] == 0).all()    # the query frame: on the ray
    # no candidate on the ray (a fine depth scan over its whole range) projects nearer
    X, _, _, _ = ray_candidates(q, c2w, K, (0.05, 400.0), n_depths=400)
    uv, _ = _project_many(X, c2w, K)
    dist = np.linalg.norm(uv - obs[:, None], axis=-1)
    least = np.where(np.isnan(dist), np.inf, dist).min(axis=1)            # (n, T)
    seen = vis & np.isfinite(least)
    assert (d[seen] <= least[seen] + 1e-6).all()
    # and the bound is tight where the ray's projection passes the observation: the tracks
    # that did not drift lie on their lines (0.3 px noise), the drifted frames do not
    assert np.median(d[seen]) < 0.5
    assert np.median(least[seen] - d[seen]) < 0.05
    # a perpendicular offset off the line is measured as such
    t, n = 9, np.flatnonzero(vis[:, 9] & (qt != 9))[0]
    pts = uv[n, :, t][np.isfinite(uv[n, :, t]).all(1)]
    along = pts[-1] - pts[0]
    normal = np.array([-along[1], along[0]]) / np.linalg.norm(along)
    moved = obs.copy()
    moved[n, t] = pts[len(pts) // 2] + 3.0 * normal
    assert abs(ray_line_distances(moved[n:n + 1], q[n:n + 1], c2w, K)[0, t] - 3.0) < 1e-6
