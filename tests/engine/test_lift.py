"""World-centric 3D (engine.lift) on synthetic scenes with exact ground truth.

The lift runs on ground-truth cameras here (expressed in the solver's own gauge is not needed:
any Sim(3) of the truth is a valid solve), so each test checks the lift itself.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_synth import make_scene, to_trackdata, umeyama  # noqa: E402

from engine.lift import Lifter, lift_tracks  # noqa: E402
from engine.lift.rigid import find_groups  # noqa: E402
from engine.lift.world import CAMERA_HEIGHT, apply_to_cameras, apply_to_points, choose_world  # noqa: E402
from engine.solve import predict_positions  # noqa: E402

SIZE = (320, 240)


def _lift(sc, chunk=300, mode="general", paths=True):
    N, T = sc["visible"].shape
    out3 = np.full((N, T, 3), np.nan, np.float32)
    grp = np.full(N, -1, np.int32)
    rep = np.full(N, np.nan, np.float32)
    static_pts = sc["tracks_3d"][sc["group"] < 0, 0]
    info = lift_tracks(np.nan_to_num(sc["tracks_2d"]), sc["visible"], sc["c2w"], sc["K"], None,
                       mode, 0.3, static_pts, SIZE, out3, grp, rep, chunk=chunk, paths=paths)
    return out3, grp, rep, info


@pytest.fixture(scope="module")
def dynamic():
    sc = make_scene("dynamic", T=24, n_points=900, W=320, H=240, seed=21)
    return sc, _lift(sc)


def test_static_points_chunked(dynamic):
    sc, (out3, grp, rep, info) = dynamic
    st = (sc["group"] < 0) & (sc["visible"].sum(1) >= 2)
    st[sc["outliers"]] = False
    lifted = st & (grp == -1)
    assert lifted.sum() >= 0.95 * st.sum()
    err = np.linalg.norm(out3[lifted] - sc["tracks_3d"][lifted], axis=-1)
    # 0.3 px noise over a 3 m baseline at ~10 m depth gives ~3 cm depth noise
    assert np.nanmedian(err) < 0.05          # metres
    # one point per static track: constant over time
    assert np.nanmax(np.ptp(out3[lifted], axis=1)) == 0
    assert info["static_reproj_median_px"] < 0.5
    assert np.isfinite(rep[lifted]).all()


def test_moving_box_is_one_rigid_group(dynamic):
    sc, (out3, grp, rep, info) = dynamic
    obj = sc["group"] == 0
    rigid = [g for g in info["groups"] if g["kind"] == "rigid"]
    assert len(rigid) == 1
    gid = rigid[0]["id"]
    assert (grp[obj] == gid).mean() >= 0.9
    assert (grp[~obj] == gid).mean() <= 0.02
    m = obj & (grp == gid)
    # defined at every frame, hidden or not
    assert np.isfinite(out3[m]).all()
    # rigid: pairwise distances inside the group are preserved over time
    X = out3[m][:50].astype(float)
    d0 = np.linalg.norm(X[:, None, 0] - X[None, :, 0], axis=-1)
    dT = np.linalg.norm(X[:, None, -1] - X[None, :, -1], axis=-1)
    assert np.abs(dT - d0).max() < 1e-3 * max(1.0, d0.max())
    # scale rule (contact with the ground under it): within 25 % of the true size
    gt = sc["tracks_3d"][m][:50]
    dg = np.linalg.norm(gt[:, None, 0] - gt[None, :, 0], axis=-1)
    ratio = np.median(d0[dg > 0.3] / dg[dg > 0.3])
    assert 0.75 < ratio < 1.25, f"group scale off by {ratio:.2f}x"
    # the motion itself is right up to that scale: reprojection is at the noise level
    assert rigid[0]["frames_seen"] == sc["visible"].shape[1]
    assert np.nanmedian(rep[m]) < 0.6


def test_nonrigid_tracks_get_a_smooth_path():
    sc = make_scene("orbit", T=20, n_points=600, W=320, H=240, seed=22)
    # make 40 tracks wobble independently (non-rigid)
    rng = np.random.default_rng(1)
    ids = rng.choice(np.flatnonzero(sc["visible"].all(1)), 40, replace=False)
    wob = np.cumsum(rng.normal(0, 1.5, size=(40, 20, 2)), axis=1)
    sc["tracks_2d"][ids] += wob.astype(np.float32)
    out3, grp, rep, info = _lift(sc)
    nr = [g for g in info["groups"] if g["kind"] == "nonrigid"]
    assert nr and (grp[ids] == nr[0]["id"]).mean() >= 0.8
    X = out3[ids].astype(float)
    assert np.isfinite(X).all()
    step = np.linalg.norm(np.diff(X, axis=1), axis=-1)
    depth = np.linalg.norm(X - sc["c2w"][None, :, :3, 3], axis=-1)
    assert np.median(step / depth[:, 1:]) < 0.05     # no jumps


def test_paths_left_out_and_filled_later_are_the_same():
    """A lift without non-rigid paths (the refinement's) leaves only those rows NaN, and
    filling them afterwards (:class:`engine.lift.Lifter`'s ``paths``, any subset, in any
    chunks) gives every row the full lift's values bit for bit."""
    sc = make_scene("dynamic", T=16, n_points=500, W=320, H=240, seed=23)
    rng = np.random.default_rng(2)
    ids = rng.choice(np.flatnonzero(sc["visible"].sum(1) >= 8), 60, replace=False)
    sc["tracks_2d"][ids] += np.cumsum(rng.normal(0, 1.5, size=(60, 16, 2)), 1).astype(np.float32)
    full = _lift(sc)
    part = _lift(sc, paths=False)
    nr_id = [g["id"] for g in full[3]["groups"] if g["kind"] == "nonrigid"][0]
    nr = full[1] == nr_id
    assert nr.sum() >= 40
    np.testing.assert_array_equal(part[1], full[1])             # the same groups
    assert np.isnan(part[0][nr]).all() and np.isnan(part[2][nr]).all()
    for a, b in zip(part[:3:2], full[:3:2]):                   # the other rows as they were
        np.testing.assert_array_equal(a[~nr], b[~nr])
    static_pts = sc["tracks_3d"][sc["group"] < 0, 0]
    lifter = Lifter(sc["c2w"], sc["K"], None, "general", 0.3, static_pts, SIZE, 100.0)
    rows = np.flatnonzero(nr)
    for chunk in (rows[::2], rows[1::2]):          # two calls, other row sets than the lift's
        lifter.paths(np.nan_to_num(sc["tracks_2d"]), sc["visible"], chunk, part[0], part[2])
    np.testing.assert_array_equal(part[0], full[0])
    np.testing.assert_array_equal(part[2], full[2])
    assert np.isfinite(part[0][nr]).all()


def test_group_fits_left_out_and_made_later_are_the_same(dynamic):
    """A lift that finds the rigid groups but fits no moving track to them (``assign=False``,
    the refinement's) puts every moving track in the non-rigid group; the lifter then fits
    any of them (``assign``, other row sets than the lift's chunks) to what the full lift
    stores for them, bit for bit."""
    sc, (out3, grp, rep, info) = dynamic
    N, T = sc["visible"].shape
    static_pts = sc["tracks_3d"][sc["group"] < 0, 0]
    lifter = Lifter(sc["c2w"], sc["K"], None, "general", 0.3, static_pts, SIZE, 100.0)
    tr = np.nan_to_num(sc["tracks_2d"])
    p3 = np.full((N, T, 3), np.nan, np.float32)
    pg = np.full(N, -1, np.int32)
    pr = np.full(N, np.nan, np.float32)
    part = lifter(tr, sc["visible"], p3, pg, pr, assign=False)
    rigid = [g["id"] for g in info["groups"] if g["kind"] == "rigid"]
    nr_id = [g["id"] for g in info["groups"] if g["kind"] == "nonrigid"][0]
    assert [g["kind"] for g in part["groups"]] == [g["kind"] for g in info["groups"]]
    assert all(g["n_tracks"] == 0 for g in part["groups"] if g["kind"] == "rigid")
    moving = grp >= 0
    np.testing.assert_array_equal(pg[moving], nr_id)
    np.testing.assert_array_equal(pg[~moving], grp[~moving])
    ids = np.flatnonzero(moving)
    got = [lifter.assign(tr, sc["visible"], part_ids) for part_ids in (ids[::3], ids[1::3],
                                                                       ids[2::3])]
    g_a = np.empty(N, np.int32)
    X_a = np.full((N, T, 3), np.nan, np.float32)
    e_a = np.full(N, np.nan, np.float32)
    for part_ids, (g, X, e) in zip((ids[::3], ids[1::3], ids[2::3]), got):
        g_a[part_ids], X_a[part_ids], e_a[part_ids] = g, X, e
    np.testing.assert_array_equal(g_a[ids], grp[ids])
    member = np.isin(grp, rigid)
    assert member.sum() >= 100
    np.testing.assert_array_equal(X_a[member], out3[member])
    np.testing.assert_array_equal(e_a[member], rep[member])
    assert np.isnan(X_a[moving & ~member]).all()


def test_hidden_frames_are_filled_as_np_interp_fills_them():
    """The non-rigid paths' hidden frames, filled for all tracks at once: per track exactly what
    np.interp over its known frames gives (held at the ends; NaN where no frame is known)."""
    from engine.lift.nonrigid import fill_hidden

    rng = np.random.default_rng(3)
    n, T = 400, 30
    X = rng.normal(size=(n, T, 3)) * 10.0 ** rng.uniform(-3, 3, size=(n, 1, 1))
    known = rng.random((n, T)) < rng.uniform(0.03, 0.9, size=(n, 1))
    known[:20] = False                  # never known
    known[20:40] = False
    known[20:40, 7] = True              # one known frame
    known[40:60, 0] = known[40:60, -1] = True
    ref = np.full((n, T, 3), np.nan)
    for i in range(n):
        v = np.flatnonzero(known[i])
        if len(v):
            for k in range(3):
                ref[i, :, k] = np.interp(np.arange(T), v, X[i, v, k])
    got = fill_hidden(X, known)
    np.testing.assert_array_equal(got, ref)
    assert np.isnan(got[:20]).all() and (got[20:40] == X[20:40, 7:8]).all()


def test_world_frame_from_ground_plane():
    sc = make_scene("orbit", T=16, n_points=800, W=320, H=240, seed=23)
    # scramble the gauge: any similarity of the truth is what a solver may return
    ang = 0.7
    R = np.array([[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]])
    G = np.eye(4)
    G[:3, :3] = 3.0 * R
    G[:3, 3] = [5, -2, 1]
    c2w = apply_to_cameras(G, sc["c2w"])
    pts = apply_to_points(G, sc["tracks_3d"][:, 0])
    S, info = choose_world(c2w, pts, "general")
    assert info["up_from"] == "ground plane"
    cw = apply_to_cameras(S, c2w)
    pw = apply_to_points(S, pts)
    ground = np.abs(sc["tracks_3d"][:, 0, 2]) < 1e-9
    assert np.abs(pw[ground, 2]).max() < 2e-3            # the ground is z = 0
    assert cw[0, 2, 3] == pytest.approx(CAMERA_HEIGHT)    # first camera at eye height
    assert np.allclose(cw[0, :2, 3], 0, atol=1e-9)        # origin below the first camera
    s, _, _ = umeyama(pw, sc["tracks_3d"][:, 0])
    assert s == pytest.approx(sc["c2w"][0, 2, 3] / CAMERA_HEIGHT, rel=1e-3)  # truth = s * world


def test_predict_positions_bridges_occlusion(dynamic):
    from engine.trackfile import TrackData

    sc, (out3, grp, rep, info) = dynamic
    td = to_trackdata(sc)
    td = TrackData(**{**td.__dict__, "tracks_3d": out3, "cam_to_world": sc["c2w"].astype(np.float32),
                      "K": sc["K"].astype(np.float32), "group": grp})
    # static background points hidden behind the box at some frame
    hidden = np.argwhere(~sc["visible"] & (sc["group"] < 0)[:, None] & (grp == -1)[:, None]
                         & (sc["visible"].sum(1) >= 5)[:, None])
    inside = ((sc["true_2d"][hidden[:, 0], hidden[:, 1]] > 5)
              & (sc["true_2d"][hidden[:, 0], hidden[:, 1]] < [315, 235])).all(1)
    hidden = hidden[inside][:200]
    assert len(hidden) > 20
    errs = []
    for t in np.unique(hidden[:, 1]):
        ids = hidden[hidden[:, 1] == t, 0]
        x, y = predict_positions(td, int(t), ids)
        errs.append(np.hypot(x - sc["true_2d"][ids, t, 0], y - sc["true_2d"][ids, t, 1]))
    assert np.nanmedian(np.concatenate(errs)) < 0.5
    # moving points too: the box's points follow its motion
    obj = np.flatnonzero(grp == 0)[:100]
    x, y = predict_positions(td, 10, obj)
    ok = sc["visible"][obj, 10]
    e = np.hypot(x - sc["true_2d"][obj, 10, 0], y - sc["true_2d"][obj, 10, 1])[ok]
    assert np.nanmedian(e) < 1.0


def test_group_finder_leaves_static_alone():
    sc = make_scene("orbit", T=16, n_points=500, W=320, H=240, seed=24)
    vis = sc["visible"]
    xy = np.nan_to_num(sc["tracks_2d"]).astype(float)
    groups, label = find_groups(xy, vis, sc["K"], sc["c2w"], 0.3, lambda t: (np.zeros((0, 2)), np.zeros(0)))
    # a static scene seen from known cameras is one rigid body moving with the world
    assert len(groups) <= 1


def test_group_finder_skips_background_bodies_that_fit_static_points():
    """200 static tracks that drift together for 6 of 24 frames (a tracker failure) fail an
    all-frames static test and move alike, so they form a candidate body. Solved, it became a
    rigid "object" of background tracks, found before the real box; with the refinement's
    robust static test the body is recognised as background and skipped, and the box alone is
    found."""
    from engine.refine.tracks import static_track_test

    sc = make_scene("dynamic", T=24, n_points=900, W=320, H=240, seed=21)
    xy = np.nan_to_num(sc["tracks_2d"]).astype(float)
    vis = sc["visible"]
    g = sc["group"]
    bg = np.flatnonzero((g < 0) & (vis.sum(1) >= 20))[:200]
    xy[bg, 8:14] += np.array([7.0, -4.0])
    ids = np.r_[bg, np.flatnonzero(g >= 0)]
    test = static_track_test(sc["c2w"], sc["K"], 0.3, sc["tracks_3d"][g < 0, 0])
    assert test(xy[bg], vis[bg]).mean() > 0.95 and test(xy[g >= 0], vis[g >= 0]).mean() < 0.05
    found = []
    for st in (None, test):
        stats: dict = {}
        groups, label = find_groups(xy[ids], vis[ids], sc["K"], sc["c2w"], 0.3,
                                    lambda t: (np.zeros((0, 2)), np.zeros(0)), static_test=st,
                                    stats=stats)
        found.append([set(g[ids][label == k].tolist()) for k in range(len(groups))])
        assert stats["static_bodies_skipped"] == (0 if st is None else 1)
    assert {-1} in found[0] and {0} in found[0]         # without the test: a background group
    assert found[1] == [{0}]                            # with it: the box alone
    assert (label == 0).sum() >= 0.9 * (g >= 0).sum()


def test_dense_group_search_samples_short_moving_tracks_not_the_longest():
    """Dense input: more moving candidates than the group search takes. 300 background tracks
    seen in all 24 frames drift together for 6 of them (a tracker failure: they fail the first
    lift's all-frames static test); the box's tracks are seen in 12 frames (it turns and
    passes). The longest candidates, which the search took before, are all background: no
    group. The sample drops the candidates the robust static fit takes for static points and
    finds the box; with no more candidates than the sample's size all are taken."""
    from engine.lift import group_sample
    from engine.refine.tracks import static_track_test

    sc = make_scene("dynamic", T=24, n_points=900, W=320, H=240, seed=21)
    xy = np.nan_to_num(sc["tracks_2d"]).astype(np.float32)
    vis = sc["visible"].copy()
    g = sc["group"]
    N, T = vis.shape
    bg = np.flatnonzero((g < 0) & (vis.sum(1) == T))[:300]
    assert len(bg) == 300
    xy[bg, 8:14] += np.array([7.0, -4.0], np.float32)
    box = np.flatnonzero(g >= 0)
    vis[box, :6] = False
    vis[box, 18:] = False
    n_max = 150
    static_pts = sc["tracks_3d"][g < 0, 0]
    out3 = np.full((N, T, 3), np.nan, np.float32)
    grp = np.full(N, -1, np.int32)
    rep = np.full(N, np.nan, np.float32)
    info = lift_tracks(xy, vis, sc["c2w"], sc["K"], None, "general", 0.3, static_pts, SIZE,
                       out3, grp, rep, max_group_tracks=n_max)
    samp = info["group_sample"]
    assert samp["candidates"] > n_max and samp["sampled"] <= n_max
    assert samp["static_dropped"] >= 0.9 * len(bg) * min(1.0, 4 * n_max / samp["candidates"])
    dyn = np.flatnonzero(grp >= 0)
    longest = dyn[np.argsort(-vis[dyn].sum(1), kind="stable")[:n_max]]
    assert not np.isin(longest, box).any()          # what the search took before: background
    rigid = [r for r in info["groups"] if r["kind"] == "rigid"]
    assert len(rigid) == 1
    members = grp == rigid[0]["id"]
    assert np.isin(np.flatnonzero(members), box).mean() > 0.95
    moving = box[grp[box] >= 0]     # (in these 12 frames some box points pass as static)
    assert len(moving) > 0.6 * len(box) and members[moving].mean() > 0.9

    test = static_track_test(sc["c2w"], sc["K"], 0.3, static_pts)
    ids, st = group_sample(xy, vis, box, sc["K"], None, test, n_max=len(box))
    np.testing.assert_array_equal(ids, box)         # no more than n_max: all, untested
    assert st == {"candidates": len(box), "static_dropped": 0, "sampled": len(box)}
    again, _ = group_sample(xy, vis, dyn, sc["K"], None, test, n_max=n_max)
    first, _ = group_sample(xy, vis, dyn, sc["K"], None, test, n_max=n_max)
    np.testing.assert_array_equal(again, first)     # seeded


def _lifter_with_group_fits_left(sc):
    """A lift of the scene (true cameras) that leaves its moving tracks unfitted to its rigid
    groups, as the refinement runs it: (lifter, float32 tracks, visibility, queries
    ``[t, x, y]`` at each track's first visible frame)."""
    N, T = sc["visible"].shape
    vis = sc["visible"]
    static_pts = sc["tracks_3d"][sc["group"] < 0, 0]
    lifter = Lifter(sc["c2w"], sc["K"], None, "general", 0.3, static_pts, SIZE, 100.0)
    tr = np.nan_to_num(sc["tracks_2d"]).astype(np.float32)
    lifter(tr, vis, np.full((N, T, 3), np.nan, np.float32), np.full(N, -1, np.int32),
           np.full(N, np.nan, np.float32), paths=False, assign=False)
    first = np.argmax(vis, 1)
    return lifter, tr, vis, np.c_[first, tr[np.arange(N), first]]


def test_robust_group_fit_keeps_box_tracks_through_their_outlier_frames(dynamic):
    """The refinement fits moving tracks to the rigid groups as it fits static points: in the
    group's frame, with a track's outlier frames dropped. Box tracks that jumped 15 px in 4 of
    their frames fail the all-frames fit and are kept by the robust one, with the object point
    and error of their clean frames; static tracks and tracks that drift all along fit no
    group."""
    sc, _ = dynamic
    lifter, tr, vis, query = _lifter_with_group_fits_left(sc)
    N, T = vis.shape
    assert len(lifter.groups) == 1
    clean = ~np.isin(np.arange(N), sc["outliers"]) & (vis.sum(1) >= 12)
    box = np.flatnonzero((sc["group"] == 0) & clean)[:60]
    bg = np.flatnonzero((sc["group"] < 0) & clean)[:60]
    bad = tr.copy()
    for i in box:                       # a jump in its last 4 frames (after the query frame)
        bad[i, np.flatnonzero(vis[i])[-4:]] += np.array([12.0, -9.0], np.float32)
    drift = bg[:30]
    bad[drift] += (np.linspace(0, 1, T)[:, None] * np.array([25.0, 10.0]))[None].astype(
        np.float32)
    g0, X0, e0 = lifter.assign(tr, vis, box, query=query)        # clean: robust = plain
    gp, _, _ = lifter.assign(bad, vis, box)
    gr, Xr, er = lifter.assign(bad, vis, box, query=query)
    assert (g0 == 0).mean() > 0.95
    assert (gp == 0).mean() < 0.2                # the all-frames fit loses them
    assert (gr == 0).mean() > 0.95 and np.nanmax(er) < 1.0
    ok = (gr == 0) & (g0 == 0)
    assert np.nanmax(np.abs(Xr[ok] - X0[ok])) < 0.05 * np.nanmax(np.abs(X0[ok]))
    # (static tracks reach this fit only once the refinement's static fit rejected them; the
    # all-frames fit takes some of these for the box: the robust one adds none)
    gsp, _, _ = lifter.assign(bad, vis, bg)
    gs, _, es = lifter.assign(bad, vis, bg, query=query)
    st = np.isin(bg, drift, invert=True)
    added = (gs == 0) & (gsp != 0)
    assert not added[st].any() and np.isnan(es[gs == 1]).all()     # no error where no group
    # a track drifting 1 px a frame may move as the box does where it is: a few join it
    assert added[~st].mean() <= 0.1


def test_robust_group_fit_skips_tracks_off_the_ray_line_with_the_same_result(dynamic,
                                                                             monkeypatch):
    """The robust group fit only fits tracks with enough observations near their query ray's
    image line through the group's motion (``RAY_LINE_MARGIN``): on box, background, jumping
    and drifting tracks it gives what fitting every track gives, and fits far fewer."""
    import engine.lift.rigid as rigid
    import engine.refine.static as static

    sc, _ = dynamic
    lifter, tr, vis, query = _lifter_with_group_fits_left(sc)
    N, T = vis.shape
    bad = tr.copy()
    rng = np.random.default_rng(4)
    jump = rng.random(N) < 0.3                       # jumps in a few frames after the query
    for i in np.flatnonzero(jump):
        bad[i, np.flatnonzero(vis[i])[-4:]] += np.array([12.0, -9.0], np.float32)
    drift = rng.random(N) < 0.2                      # drift all along
    bad[drift] += (np.linspace(0, 1, T)[:, None] * np.array([25.0, 10.0]))[None].astype(
        np.float32)
    rows = np.arange(N)
    fitted = []
    real_fit = static.fit_static

    def counting_fit(xy_u, *args, **kw):
        fitted.append(len(xy_u))
        return real_fit(xy_u, *args, **kw)

    monkeypatch.setattr(static, "fit_static", counting_fit)
    g, X, e = lifter.assign(bad, vis, rows, query=query)
    n_filtered = sum(fitted)
    fitted.clear()
    monkeypatch.setattr(rigid, "RAY_LINE_MARGIN", np.inf)
    g_all, X_all, e_all = lifter.assign(bad, vis, rows, query=query)
    n_all = sum(fitted)
    assert np.array_equal(g, g_all)
    assert np.array_equal(X, X_all, equal_nan=True) and np.array_equal(e, e_all, equal_nan=True)
    assert (g == 0).sum() > 50                       # the box's tracks still follow it
    assert n_filtered < 0.6 * n_all


def test_dense_input_needs_a_share_of_the_tracks_for_a_group():
    """A group must end with MIN_GROUP_TRACKS tracks, and on dense input MIN_GROUP_FRACTION of
    all tracks: of 100,000 tracks a group of 25 is dissolved, of 1,000 it is kept."""
    from engine.lift.prune import (MIN_GROUP_FRACTION, MIN_GROUP_TRACKS, dissolve_small_groups,
                                   min_group_tracks)

    assert min_group_tracks(1024) == MIN_GROUP_TRACKS
    assert min_group_tracks(100_000) == int(np.ceil(MIN_GROUP_FRACTION * 100_000)) > 25

    class Paths:                                        # the lifter's paths: recorded
        def paths(self, tracks_2d, visible, rows, out3, outr):
            out3[rows] = 1.0

    for n, kept in ((1_000, True), (100_000, False)):
        group = np.full(n, -1, np.int32)
        group[:25] = 0
        group[25:40] = 1
        out3 = np.zeros((n, 2, 3), np.float32)
        report = {"groups": [{"id": 0, "kind": "rigid"}, {"id": 1, "kind": "nonrigid"}]}
        rows = dissolve_small_groups(report, group, Paths(), None, None, out3,
                                     np.zeros(n, np.float32))
        assert (len(rows) == 0) == kept
        assert [g["kind"] for g in report["groups"]] == (["rigid", "nonrigid"] if kept
                                                         else ["nonrigid"])
        assert (group[:40] == 0).sum() == (25 if kept else 40)    # the non-rigid id is 0 alone


def test_small_rigid_groups_are_dissolved_into_paths(dynamic):
    """A rigid group that fewer than MIN_GROUP_TRACKS tracks follow becomes non-rigid: its
    tracks get the lifter's paths (and, with ``restore``, the tracker's rows back), the other
    groups are renumbered 0..k-1 with the non-rigid group last, and the report says so. A group
    with enough tracks is left as it is; every group's report count becomes its final one."""
    from engine.lift.prune import MIN_GROUP_TRACKS, dissolve_small_groups

    sc, (out3, grp, rep, info) = dynamic
    N, T = sc["visible"].shape
    static_pts = sc["tracks_3d"][sc["group"] < 0, 0]
    lifter = Lifter(sc["c2w"], sc["K"], None, "general", 0.3, static_pts, SIZE, 100.0)
    tr = np.nan_to_num(sc["tracks_2d"])
    box = [g for g in info["groups"] if g["kind"] == "rigid"][0]
    assert box["n_tracks"] >= MIN_GROUP_TRACKS
    # the real box group first untouched, then as group 1 behind a 6-track group 0
    g1, o1, r1 = grp.copy(), out3.copy(), rep.copy()
    report = {"groups": [{**g, "n_tracks": 999} for g in info["groups"]]}    # stale counts
    rows = dissolve_small_groups(report, g1, lifter, tr, sc["visible"], o1, r1)
    assert len(rows) == 0 and "dissolved_groups" not in report
    assert [g["n_tracks"] for g in report["groups"]] == \
        [int((grp == g["id"]).sum()) for g in info["groups"]]         # the final counts
    np.testing.assert_array_equal(g1, grp)
    np.testing.assert_array_equal(o1, out3)

    nr = [g for g in info["groups"] if g["kind"] == "nonrigid"][0]
    assert (box["id"], nr["id"]) == (0, 1)          # (this scene: the box, then non-rigid)
    nr_rows = grp == 1
    small = np.flatnonzero(grp == -1)[:6]
    g2 = np.where(grp >= 0, grp + 1, grp).astype(np.int32)
    g2[small] = 0
    o2, r2 = out3.copy(), rep.copy()
    o2[small] = 7.0                                    # "the small group's motion"
    xy_out = tr.copy()
    xy_out[small] += 3.0                               # the refinement's predicted 2D
    report = {"groups": [{"id": 0, "kind": "rigid", "n_tracks": 6, "scale": 1.0},
                         {**box, "id": 1}, {**nr, "id": 2}]}
    rows = dissolve_small_groups(report, g2, lifter, tr, sc["visible"], o2, r2,
                                 restore=((tr,), (xy_out,)))
    np.testing.assert_array_equal(rows, small)
    box_rows = grp == 0
    np.testing.assert_array_equal(g2[box_rows], 0)      # the box, renumbered
    np.testing.assert_array_equal(g2[small], 1)         # the non-rigid group, last
    np.testing.assert_array_equal(g2[nr_rows], 1)
    assert (g2[~box_rows & ~nr_rows & ~np.isin(np.arange(N), small)] == -1).all()
    assert [(g["id"], g["kind"], g["n_tracks"]) for g in report["groups"]] == \
        [(0, "rigid", int(box_rows.sum())), (1, "nonrigid", int(nr_rows.sum()) + 6)]
    assert report["dissolved_groups"]["groups"] == [{"old_id": 0, "n_tracks": 6, "scale": 1.0}]
    # their 3D are the lifter's paths, everyone else's as they were
    want3, wantr = np.full((N, T, 3), np.nan, np.float32), np.full(N, np.nan, np.float32)
    lifter.paths(tr, sc["visible"], small, want3, wantr)
    np.testing.assert_array_equal(o2[small], want3[small])
    np.testing.assert_array_equal(r2[small], wantr[small])
    others = np.ones(N, bool)
    others[small] = False
    np.testing.assert_array_equal(o2[others], out3[others])
    np.testing.assert_array_equal(xy_out, tr)           # the tracker's 2D given back


def test_queries_are_undistorted_as_their_tracks_are():
    """A query ``[t, x, y]`` is its track's pixel at frame t: undistorted, it is the undistorted
    track's pixel there (each frame with its own intrinsics); without distortion it is kept."""
    from engine.lift.static import undistort_queries, undistort_tracks

    rng = np.random.default_rng(3)
    T, n = 5, 40
    K = np.tile(np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]]), (T, 1, 1))
    K[:, 0, 0] = K[:, 1, 1] = np.linspace(280, 340, T)             # a zoom
    xy = rng.uniform(0, 320, (n, T, 2))
    vis = np.ones((n, T), bool)
    t = rng.integers(0, T, n)
    q = np.c_[t, xy[np.arange(n), t]]
    dist = (-0.2, 0.05, 0.0)
    want = undistort_tracks(xy, vis, K, dist)[np.arange(n), t]
    got = undistort_queries(q, K, dist)
    np.testing.assert_array_equal(got[:, 0], t)
    np.testing.assert_allclose(got[:, 1:], want, atol=1e-9)
    assert np.abs(got[:, 1:] - q[:, 1:]).max() > 1.0                # it did undistort
    for none in (None, (0.0, 0.0, 0.0)):
        np.testing.assert_array_equal(undistort_queries(q, K, none), q)
