"""Depths of points on a plain wall from the motion of the whole plain region (engine.refine.regions).

The clip is ray-cast in numpy: a textured floor (z = 0), a plain wall (y = WALL_Y, grey-green
plus fresh per-frame noise, as a render's) standing on it, and a plain sky above, filmed by a
camera that dollies sideways. A point on the wall has no appearance of its own; the wall's
outline (its top edge against the sky, its foot on the floor, its side edges) still moves with it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_synth import look_at  # noqa: E402
from track_synth import texture  # noqa: E402

from engine.decode import open_footage  # noqa: E402
from engine.refine.regions import plain_region_depths  # noqa: E402

W, H, T = 160, 120, 16
WALL_Y, WALL_X, WALL_TOP = 6.0, 2.5, 2.2      # wall: y = 6, |x| <= 2.5, 0 <= z <= 2.2
WALL_RGB = np.array([200, 205, 150], np.float32)
SKY_RGB = np.array([150, 180, 230], np.float32)


def _wall_clip(tmp_path):
    """Frames on disk, cameras (T, 4, 4), K, and queries on the wall in frame 0 with their true
    world points; plus textured floor points (query, world) seen in frame 0."""
    import cv2

    tex = texture(600, 600, 3).astype(np.float32)
    f = 1.0 * W
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
    c2w = np.stack([look_at(np.array([-0.8 + 1.6 * a, -2.0, 1.4]), np.array([0.0, WALL_Y, 0.9]))
                    for a in np.linspace(0, 1, T)])
    ys, xs = np.mgrid[0:H, 0:W]
    pix = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 1) @ np.linalg.inv(K).T
    rng = np.random.default_rng(0)
    folder = tmp_path / "wall"
    folder.mkdir()
    for t in range(T):
        d = pix @ c2w[t, :3, :3].T
        C = c2w[t, :3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            s_wall = (WALL_Y - C[1]) / d[:, 1]
            s_floor = -C[2] / d[:, 2]
        Xw = C + s_wall[:, None] * d
        Xf = C + s_floor[:, None] * d
        wall = (s_wall > 0) & (np.abs(Xw[:, 0]) <= WALL_X) & (Xw[:, 2] >= 0) & (Xw[:, 2] <= WALL_TOP)
        floor = (s_floor > 0) & ~wall
        img = np.tile(SKY_RGB, (xs.size, 1))
        img[wall] = WALL_RGB
        u = np.clip((Xf[floor, 0] / 16 + 0.5) * 599, 0, 599)
        v = np.clip((Xf[floor, 1] / 16 + 0.25) * 599, 0, 599)
        img[floor] = cv2.remap(tex, u.astype(np.float32)[:, None], v.astype(np.float32)[:, None],
                               cv2.INTER_LINEAR)[:, 0]
        img += rng.normal(0, 1.5, img.shape)                  # render noise, fresh every frame
        img = np.clip(img, 0, 255).reshape(H, W, 3).astype(np.uint8)
        cv2.imwrite(str(folder / f"frame_{t:04d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def on(frame_pts, y0, y1, x0, x1, step):
        gy, gx = np.mgrid[y0:y1:step, x0:x1:step]
        return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)

    def world(q2, plane):
        d = np.c_[q2, np.ones(len(q2))] @ np.linalg.inv(K).T @ c2w[0, :3, :3].T
        C = c2w[0, :3, 3]
        s = (WALL_Y - C[1]) / d[:, 1] if plane == "wall" else -C[2] / d[:, 2]
        return C + s[:, None] * d

    q_all = on(0, 2, H - 2, 2, W - 2, 6)
    Xw = world(q_all, "wall")
    inner = (np.abs(Xw[:, 0]) < WALL_X - 0.3) & (Xw[:, 2] > 0.3) & (Xw[:, 2] < WALL_TOP - 0.3)
    Xf = world(q_all, "floor")
    floor_pts = ~inner & (Xf[:, 2] > -1) & (np.linalg.norm(Xf - c2w[0, :3, 3], axis=1) < 5.5) \
        & (Xf[:, 1] < WALL_Y - 0.5)
    q_wall = np.c_[np.zeros(inner.sum()), q_all[inner]]
    q_floor = np.c_[np.zeros(floor_pts.sum()), q_all[floor_pts]]
    return str(folder / "frame_%04d.png"), c2w, np.repeat(K[None], T, 0), q_wall, Xw[inner], q_floor, Xf[floor_pts]


def _depth(X, c2w):
    return np.linalg.norm(X - c2w[0, :3, 3], axis=1)


def test_plain_wall_gets_its_plane_depth_and_coherent_points_are_left_alone(tmp_path):
    path, c2w, K, q_wall, X_wall, q_floor, X_floor = _wall_clip(tmp_path)
    footage = open_footage(path)
    assert len(q_wall) >= 40 and len(q_floor) >= 20
    C0 = c2w[0, :3, 3]
    rays = (X_wall - C0) / _depth(X_wall, c2w)[:, None]
    true = _depth(X_wall, c2w)
    # what a drifting tracker leaves: the wall points' static fits scattered by +-30 % in depth
    rng = np.random.default_rng(1)
    drift = C0 + (true * np.exp(rng.uniform(-0.35, 0.35, len(true))))[:, None] * rays
    near, far = 0.3 * true.min(), 3.0 * true.max()

    def scattered(t):
        return np.concatenate([drift, X_floor])

    depth, rep = plain_region_depths(footage, q_wall, c2w, K, scattered, (near, far))
    ok = np.isfinite(depth)
    assert ok.mean() > 0.9, rep
    err = np.abs(depth[ok] / true[ok] - 1)
    before = np.abs(_depth(drift, c2w) / true - 1)
    assert np.median(err) < 0.03 and np.median(before) > 0.1, (np.median(err), rep)

    # tracks the tracker lost (not placed static) get the region's depth only where most of the
    # region's candidates are static
    lost = np.arange(len(q_wall)) % 4 == 0
    depth3, _ = plain_region_depths(footage, q_wall, c2w, K, scattered, (near, far), static=~lost)
    assert np.isfinite(depth3[lost]).mean() > 0.9
    depth4, _ = plain_region_depths(footage, q_wall, c2w, K, scattered, (near, far), static=lost)
    assert np.isfinite(depth4[lost]).mean() > 0.9 and not np.isfinite(depth4[~lost]).any()

    # the same region whose points already lie on one surface: nothing replaced
    def coherent(t):
        return np.concatenate([X_wall * 1.0, X_floor])

    depth2, rep2 = plain_region_depths(footage, q_wall, c2w, K, coherent, (near, far))
    assert not np.isfinite(depth2).any() and rep2["n_regions_replaced"] == 0, rep2


def _score_per_frame(reg, p: np.ndarray) -> float:
    """A region's score the plain way: the plane's 3D points projected through each target
    camera and sampled with one remap per frame; each sample's median cost over the frames it
    lands in (of the frames with enough samples), averaged (what :meth:`_Region.score` must
    equal)."""
    import cv2

    from engine.refine.regions import COST_CAP, MIN_INFRAME, MIN_SAMPLE_FRAMES
    from engine.refine.static import _project_many

    w = reg.rays[:, :2] @ p[:2] + p[2]
    if not (w > 1e-12).all() or not reg.tg:   # a sample behind the query camera: not the surface
        return 1.0
    X = (reg.rays / w[:, None]) @ reg.c2w[reg.t, :3, :3].T + reg.c2w[reg.t, :3, 3]
    uv, z = _project_many(X, reg.c2w[reg.tg], reg.K[reg.tg])
    uv = reg.geo.to_region(uv)
    Hr, Wr = reg.mask.shape
    costs = []
    for j, f in enumerate(reg.tg):
        m = (z[:, j] > 0) & (uv[:, j, 0] >= 0) & (uv[:, j, 0] <= Wr - 1) \
            & (uv[:, j, 1] >= 0) & (uv[:, j, 1] <= Hr - 1)
        if m.mean() < MIN_INFRAME:
            continue
        u = np.nan_to_num(uv[:, j]).astype(np.float32)
        s = cv2.remap(reg.frames[f], u[:, :1], u[:, 1:], cv2.INTER_LINEAR)[:, 0] / 255.0
        costs.append(np.where(m, np.minimum(np.abs(s - reg.ref).sum(-1), COST_CAP), np.nan))
    if not costs:
        return 1.0
    c = np.array(costs)
    n = np.isfinite(c).sum(0)
    ok = n >= min(MIN_SAMPLE_FRAMES, len(c))
    if ok.mean() < MIN_INFRAME:
        return 1.0
    return float(np.mean(np.nanmedian(c[:, ok], axis=0)))


def _random_region():
    """A region of random samples and frames seen by a moving camera (query frame 9 of 20)."""
    from engine.refine.regions import _Region, _Scale, _targets

    rng = np.random.default_rng(4)
    Tn, Win, Hin = 20, 200, 150
    geo = _Scale((Win, Hin), (160, 120))            # region images smaller than the input
    K = np.repeat(np.array([[180.0, 0, (Win - 1) / 2], [0, 180.0, (Hin - 1) / 2],
                            [0, 0, 1]])[None], Tn, 0)
    c2w = np.stack([look_at(np.array([-1.0 + 0.1 * i, -3.0, 1.2 + 0.02 * i]),
                            np.array([0.2 * np.sin(i), 5.0, 1.0])) for i in range(Tn)])
    t = 9
    frames = {f: rng.integers(0, 256, (120, 160, 3), np.uint8) for f in _targets(t, Tn)}
    pix = np.c_[rng.uniform(-0.5, Win - 0.5, 900), rng.uniform(-0.5, Hin - 0.5, 900)]
    rays = np.c_[pix, np.ones(len(pix))] @ np.linalg.inv(K[t]).T
    ref = rng.random((len(pix), 3)).astype(np.float32)
    return _Region(t, ref, rays, c2w, K, geo, np.ones((120, 160), np.uint8), frames), rng


def test_region_score_through_plane_homographies_equals_projecting_each_frame():
    """The score maps the region's samples into all target frames through one homography each
    and samples the frames stacked in one remap; it equals projecting the plane's 3D points and
    remapping frame by frame, for planes in front, slanted, partly behind and out of frame."""
    reg, rng = _random_region()
    planes = [np.array([0.0, 0.0, 1 / d]) for d in (0.5, 2.0, 8.0, 40.0, 1e4)]
    planes += [np.r_[rng.normal(0, 0.2, 2), rng.uniform(-0.05, 0.4)] for _ in range(40)]
    got = np.array([reg.score(p) for p in planes])
    want = np.array([_score_per_frame(reg, p) for p in planes])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert (want < 1.0).sum() > 20 and (want == 1.0).any()     # both kinds of plane were tried
    reg.release()
    assert reg.score(planes[2]) == got[2]                        # the stack is made again


def test_a_plane_with_any_sample_behind_the_query_camera_scores_the_worst():
    """A region is a surface seen in the query frame: a plane that puts even a few of its
    samples behind the camera is rejected, however well the rest align (the plane of the
    demo's back wall had its right half behind the camera and won on its left half)."""
    reg, _ = _random_region()
    x = reg.rays[:, 0]
    for frac in (0.02, 0.4):                 # inverse depth a x + c <= 0 for that share
        a = 0.5
        c = -a * np.quantile(x, frac)
        w = a * x + c
        assert 0 < (w <= 1e-12).mean() <= frac + 0.01
        assert reg.score(np.array([a, 0.0, c])) == 1.0
    # the same slant moved in front of the camera is scored
    assert reg.score(np.array([a, 0.0, -a * x.min() + 0.05])) < 1.0


def test_median_sample_cost_ignores_a_few_occluded_frames_and_samples_seen_too_rarely():
    """Each sample counts by its median over the frames it lands in: a foreground object over
    it in one frame of three does not count; a sample in fewer than MIN_SAMPLE_FRAMES frames
    is left out, and too few counted samples score 1.0."""
    from engine.refine.regions import _median_sample_cost

    c = np.array([[0.02, 0.02, 0.02, 0.3],
                  [0.30, 0.02, 0.04, 0.3],     # sample 0 occluded in this frame
                  [0.04, 0.04, 0.02, 0.3]])
    inframe = np.ones_like(c, bool)
    inframe[1:, 3] = False                     # sample 3 lands in one frame only
    assert _median_sample_cost(c, inframe) == np.float64(np.mean([0.04, 0.02, 0.02]))
    inframe[1:, 2] = False
    inframe[1:, 1] = False                     # 1 of 4 samples left: under MIN_INFRAME
    assert _median_sample_cost(c, inframe) == 1.0
    # two frames compared: a sample in both counts, with the mean of the two as its median
    assert _median_sample_cost(c[:2], np.ones((2, 4), bool)) == np.mean(
        [0.16, 0.02, 0.03, 0.3])
