"""Camera solve (engine.solve) on synthetic scenes with exact ground truth (tests/engine/solve_synth.py).

Scenes: 320x240, 0.3 px noise, 2 % gross-outlier tracks (jumps and drifts). Thresholds are the
issue's targets where the synthetic data can reach them: the median reprojection error is measured
against the *noisy* observations, whose own median error norm is 0.3 * 1.18 = 0.35 px, so the
check there is "at the noise floor" (<= 0.45 px), not <= 0.3 px.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_synth import ate, make_scene, rotation_errors_deg, to_trackdata  # noqa: E402

from engine.parallel import BLAS_THREAD_VARS  # noqa: E402
from engine.solve import focal_px_from_mm, predict_positions, solve_trackfile  # noqa: E402
from engine.solve.observability import FOCAL_SIGMA_WARN  # noqa: E402
from engine.solve.pipeline import SolveError, solve_cameras  # noqa: E402
from engine.trackfile import load_trackfile, save_trackfile  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZE = (320, 240)


def _solve(sc, **kw):
    return solve_cameras(sc["tracks_2d"], sc["visible"], None, SIZE, **kw)


def _focal_err(sol, sc):
    return np.abs(sol.K[:, 0, 0] / sc["focals"] - 1)


def _focal_warnings(report):
    return [w for w in report["warnings"] if "focal length poorly constrained" in w]


@pytest.fixture(scope="module")
def orbit():
    return make_scene("orbit", T=24, n_points=900, W=320, H=240, seed=11)


def test_orbit_self_calibrated(orbit):
    sol = _solve(orbit)
    a, length = ate(sol.cam_to_world, orbit["c2w"])
    assert sol.mode == "general"
    assert a / length <= 0.005, f"ATE {a / length:.4%} of path"
    assert _focal_err(sol, orbit).max() <= 0.02
    assert sol.report["reproj_median_px"] <= 0.45
    assert sol.report["focal_source"] == "self-calibrated"
    # a well-conditioned orbit pins the focal: small uncertainty, no warning
    assert 0 < sol.report["focal_sigma_rel"] < FOCAL_SIGMA_WARN / 2
    assert not _focal_warnings(sol.report)
    # the outlier tracks must not be among the static points the solve kept
    kept = set(sol.sample_ids[sol.sample_static].tolist())
    assert len(kept & set(orbit["outliers"].tolist())) <= 0.2 * len(orbit["outliers"])


def test_self_calibration_restarts_keep_the_best_constrained_run(orbit, monkeypatch):
    """A self-calibrated solve runs SOLVE_RESTARTS times (the later runs on tracks jittered far
    below their noise) and keeps the first run unless a restart's focal uncertainty is clearly
    lower; a known focal runs once; one run can be asked for; a first run that pins the focal
    within RESTART_SKIP_SIGMA is kept without restarts."""
    import engine.solve.pipeline as pipeline
    from engine.solve.pipeline import SOLVE_RESTARTS

    skip = pipeline.RESTART_SKIP_SIGMA
    monkeypatch.setattr(pipeline, "RESTART_SKIP_SIGMA", 0.0)
    sol = _solve(orbit)
    runs = sol.report["restarts"]
    assert len(runs) == SOLVE_RESTARTS >= 2 and all(r["ok"] for r in runs)
    kept = [r for r in runs if r["kept"]]
    assert len(kept) == 1
    # run 0 unless a restart is clearly better constrained
    from engine.solve.pipeline import RESTART_SIGMA_MARGIN

    want = runs[0]
    for r in runs[1:]:
        if r["focal_sigma_rel"] < RESTART_SIGMA_MARGIN * want["focal_sigma_rel"]:
            want = r
    assert kept[0]["run"] == want["run"]
    assert kept[0]["focal_px"] == sol.report["focal_px"]
    # the jitter changes no information: every run lands on the same focal here
    f = np.array([r["focal_px"] for r in runs])
    assert np.ptp(f) / np.median(f) < 0.01
    assert "restarts" not in _solve(orbit, focal=float(orbit["focals"][0])).report
    one = _solve(orbit, restarts=1)
    assert "restarts" not in one.report
    assert one.report["focal_px"] == runs[0]["focal_px"]      # run 0 is the unjittered solve
    # this orbit pins the focal far better than 1 %: by default run 0 stands alone
    assert runs[0]["focal_sigma_rel"] < skip
    monkeypatch.setattr(pipeline, "RESTART_SKIP_SIGMA", skip)
    alone = _solve(orbit)
    assert [r["run"] for r in alone.report["restarts"]] == [0]
    assert "no restarts" in alone.report["restarts_skipped"]
    np.testing.assert_array_equal(alone.cam_to_world, one.cam_to_world)
    np.testing.assert_array_equal(alone.K, one.K)


def test_known_focal_is_kept(orbit):
    f = float(orbit["focals"][0])
    sol = _solve(orbit, focal=f)
    assert np.allclose(sol.K[:, 0, 0], f)
    a, length = ate(sol.cam_to_world, orbit["c2w"])
    assert a / length <= 0.005
    assert sol.report["focal_source"] == "given"
    assert sol.report["focal_sigma_rel"] == 0.0 and not _focal_warnings(sol.report)


def test_forward_motion_warns_focal_poorly_constrained(tmp_path):
    # dolly-in along the optical axis: the images barely constrain the focal
    sc = make_scene("forward", T=16, n_points=900, W=320, H=240, seed=5)
    sol = _solve(sc)
    rel = sol.report["focal_sigma_rel"]
    assert rel > 2 * FOCAL_SIGMA_WARN
    (w,) = _focal_warnings(sol.report)
    assert f"±{100 * rel:.1f} %" in w and "--focal" in w
    # the estimate is honest: the focal really is off by about that much (not by 10 sigma)
    err = float(_focal_err(sol, sc).max())
    assert err > 2 * FOCAL_SIGMA_WARN and err < 6 * rel, (err, rel)
    # with the focal known there is nothing to warn about
    known = _solve(sc, focal=float(sc["focals"][0]))
    assert known.report["focal_sigma_rel"] == 0.0 and not _focal_warnings(known.report)
    # the CLI says it on stderr and records it in the report; --focal-mm silences it
    inp = tmp_path / "fwd.npz"
    save_trackfile(inp, to_trackdata(sc))
    sensor = 36.0
    f_mm = float(sc["focals"][0]) / sc["W"] * sensor
    for extra, warned in (([], True), (["--focal-mm", str(f_mm), "--sensor-width", str(sensor)],
                                       False)):
        r = subprocess.run([sys.executable, "-m", "engine", "solve", str(inp), "--out",
                            str(tmp_path / "out.npz"), "--no-refine", "--progress", "quiet",
                            *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert ("focal length poorly constrained" in r.stderr) is warned, r.stderr
        md = load_trackfile(tmp_path / "out.npz").metadata["solve"]
        assert (md["focal_sigma_rel"] > FOCAL_SIGMA_WARN) is warned


def test_focal_from_millimetres():
    assert focal_px_from_mm(35.0, 36.0, 1920) == pytest.approx(1866.6667, rel=1e-6)
    with pytest.raises(ValueError):
        focal_px_from_mm(0, 36, 1920)


def test_tripod_rotation_only():
    sc = make_scene("tripod", T=24, n_points=900, W=320, H=240, seed=12)
    sol = _solve(sc)
    assert sol.mode == "tripod"
    assert np.median(rotation_errors_deg(sol.cam_to_world, sc["c2w"])) <= 0.2
    assert _focal_err(sol, sc).max() <= 0.02
    assert any("tripod" in w for w in sol.report["warnings"])
    assert sol.report["focal_sigma_rel"] < FOCAL_SIGMA_WARN / 2 and not _focal_warnings(sol.report)
    # every camera centre at one point
    assert np.ptp(sol.cam_to_world[:, :3, 3], axis=0).max() < 1e-9


def test_zoom_per_frame_focal():
    sc = make_scene("zoom", T=24, n_points=900, W=320, H=240, seed=13)
    sol = _solve(sc, zoom=True)
    assert sol.report["zoom"]
    err = _focal_err(sol, sc)
    assert err.max() <= 0.03, f"per-frame focal error up to {err.max():.2%}"
    # a zoom is a focal change, not a dolly: the camera centre stays put
    assert np.ptp(sol.cam_to_world[:, :3, 3], axis=0).max() < 1e-9
    assert sol.K[-1, 0, 0] / sol.K[0, 0, 0] == pytest.approx(sc["focals"][-1] / sc["focals"][0], rel=0.03)


@pytest.mark.slow
def test_zoom_while_moving_is_not_a_dolly():
    sc = make_scene("orbit_zoom", T=24, n_points=900, W=320, H=240, seed=31)
    sol = _solve(sc, zoom=True)
    assert sol.mode == "general"
    assert _focal_err(sol, sc).max() <= 0.03
    a, length = ate(sol.cam_to_world, sc["c2w"])
    assert a / length <= 0.005


@pytest.mark.slow
def test_zoom_detected_without_flag():
    sc = make_scene("zoom", T=24, n_points=900, W=320, H=240, seed=14)
    sol = _solve(sc)
    assert sol.report.get("zoom_detected")
    assert _focal_err(sol, sc).max() <= 0.03


def test_large_moving_object_is_not_background():
    # the moving box holds about half of the tracks in most frames
    sc = make_scene("dynamic", T=24, n_points=900, W=320, H=240, seed=15)
    sol = _solve(sc)
    gt_static = sc["group"][sol.sample_ids] < 0
    chosen = sol.sample_static
    assert (gt_static[chosen]).mean() >= 0.97, "moving-object tracks leaked into the background"
    a, length = ate(sol.cam_to_world, sc["c2w"])
    assert a / length <= 0.005
    assert _focal_err(sol, sc).max() <= 0.02


def test_radial_distortion_k1():
    sc = make_scene("orbit", T=24, n_points=900, W=320, H=240, seed=16, k1=-0.08)
    plain = _solve(sc, focal=float(sc["focals"][0]))
    sol = _solve(sc, focal=float(sc["focals"][0]), distortion="k1")
    assert sol.dist[0] == pytest.approx(-0.08, abs=0.01)
    assert sol.report["distortion"]["model"] == "polynomial"
    assert sol.report["reproj_median_px"] < plain.report["reproj_median_px"]
    assert sol.report["reproj_median_px"] <= 0.45


def test_short_clip_8_frames():
    sc = make_scene("orbit", T=8, n_points=600, W=320, H=240, seed=17)
    sol = _solve(sc, focal=float(sc["focals"][0]))
    a, length = ate(sol.cam_to_world, sc["c2w"])
    assert a / length <= 0.01


def test_cannot_solve_says_why():
    sc = make_scene("orbit", T=10, n_points=600, W=320, H=240, seed=18)
    with pytest.raises(SolveError, match="at least 2"):
        solve_cameras(sc["tracks_2d"][:, :1], sc["visible"][:, :1], None, SIZE)
    with pytest.raises(SolveError, match="tracks"):
        solve_cameras(sc["tracks_2d"][:10], sc["visible"][:10], None, SIZE)
    # pure noise: no consistent background, no rotation model either
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, size=(400, 10, 2)).astype(np.float32)
    with pytest.raises(SolveError) as e:
        solve_cameras(xy, np.ones((400, 10), bool), None, SIZE)
    assert "cannot solve the camera" in str(e.value)
    assert e.value.report["ok"] is False and e.value.report["reason"]


def test_solve_trackfile_and_cli(tmp_path, orbit):
    inp, out = tmp_path / "tracks.npz", tmp_path / "solved.npz"
    save_trackfile(inp, to_trackdata(orbit))
    report = solve_trackfile(inp, out)
    d = load_trackfile(out)
    assert d.metadata["solve"]["ok"] and d.metadata["solve"]["mode"] == "general"
    assert d.group is not None and d.reproj_error is not None
    json.dumps(d.metadata)  # the report is JSON-clean
    a, length = ate(np.asarray(d.cam_to_world, float), orbit["c2w"])
    assert a / length <= 0.005
    assert report["world"]["up_from"] == "ground plane"
    # predict_positions: static points reproject onto their (noise-free) tracks, also where hidden
    st = np.flatnonzero((np.asarray(d.group) == -1) & (orbit["group"] < 0)
                        & np.isfinite(np.asarray(d.reproj_error)))[:200]
    t = 12
    x, y = predict_positions(d, t, st)
    true = orbit["true_2d"][st, t]
    err = np.hypot(x - true[:, 0], y - true[:, 1])
    assert np.nanmedian(err) < 0.5
    # CLI, writing over its own input
    cli_out = inp
    # (the engine process asks BLAS for one thread when the environment names no count)
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARS}
    r = subprocess.run([sys.executable, "-m", "engine", "solve", str(inp), "--out", str(cli_out),
                        "--focal", str(float(orbit["focals"][0])), "--progress", "quiet",
                        "--report", str(tmp_path / "rep.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "solved" in r.stdout
    # the summary's counts are the written file's labels
    g = np.asarray(load_trackfile(cli_out).group)
    assert f"{int((g < 0).sum())} static / {int((g >= 0).sum())} moving tracks" in r.stdout
    rep = json.loads((tmp_path / "rep.json").read_text())
    fin = rep["refine"]["final"]       # static, rigid and tracker-kept: every track once
    assert fin["n_static"] + fin["n_rigid"] + fin["n_tracker_kept"] == len(g)
    assert rep["focal_source"] == "given"
    assert rep["threads"]["blas"] == "1" and rep["threads"]["loops"] >= 1
    assert load_trackfile(cli_out).metadata["solve"]["focal_source"] == "given"
    r = subprocess.run([sys.executable, "-m", "engine", "solve", str(inp), "--out",
                        str(tmp_path / "x.npz"), "--focal-mm", "35"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "sensor-width" in r.stderr


def _mc_focals(errors: str, draws: int = 24):
    """Bundle-adjust one small orbit scene ``draws`` times under fresh errors; returns (the
    solved focals, mean formal sigma px, mean track-clustered sigma px)."""
    from engine.solve.bundle import BAState, bundle_adjust
    from engine.solve.camera import rotvec

    sc = make_scene("orbit", T=8, n_points=160, W=320, H=240, noise=0.0, outlier_frac=0.0,
                    seed=3)
    ok = sc["visible"].sum(1) >= 3
    X, vis, true = sc["tracks_3d"][ok, 0], sc["visible"][ok], sc["true_2d"][ok]
    pi, ci = np.nonzero(vis)
    w2c = np.linalg.inv(sc["c2w"])
    st0 = BAState(rotvec(w2c[:, :3, :3]), w2c[:, :3, 3].copy(), np.array([sc["focals"][0]]),
                  np.zeros(len(w2c), int), X.copy(), (SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2)
    rng = np.random.default_rng(0)
    f, formal, track = [], [], []
    for _ in range(draws):
        n = rng.normal(0, 0.5, (len(X), len(w2c), 2))
        if errors == "drift":  # each track slides steadily in its own direction (tracker drift)
            n = 0.2 * n + rng.normal(0, 1.0, (len(X), 1, 2)) * np.linspace(-1, 1, len(w2c))[:, None]
        st, info = bundle_adjust(st0, ci, pi, true[pi, ci] + n[pi, ci], f_scale=50.0, max_nfev=30,
                                 tol=1e-10, marginals=True)
        f.append(st.focals[0])
        formal.append(info["focal_sigma_px"][0])
        track.append(info["focal_sigma_track_px"][0])
    return np.array(f), float(np.mean(formal)), float(np.mean(track))


def test_focal_sigma_matches_monte_carlo():
    """The bundle adjustment's focal marginals are what repeated solves actually scatter by."""
    f, formal, track = _mc_focals("white")
    emp = float(np.std(f))
    assert 0.7 < formal / emp < 1.4 and 0.7 < track / emp < 1.4, (emp, formal, track)
    # errors correlated along each track: the formal value is far too optimistic, the
    # track-clustered one still matches (it is what the solver reports)
    f, formal, track = _mc_focals("drift")
    emp = float(np.std(f))
    assert formal < 0.5 * emp and 0.7 < track / emp < 1.4, (emp, formal, track)


def test_marginals_do_not_change_the_solution():
    from engine.solve.bundle import BAState, bundle_adjust

    rng = np.random.default_rng(1)
    X = rng.uniform([-3, -2, 6], [3, 2, 12], (120, 3))
    T = 6
    rv = rng.normal(0, 0.02, (T, 3))
    ts = np.c_[np.linspace(0, 1, T), np.zeros(T), np.zeros(T)]
    st = BAState(rv, ts, np.array([300.0]), np.zeros(T, int), X, 160.0, 120.0)
    from engine.solve.bundle import project_obs

    cam, pt = np.repeat(np.arange(T), len(X)), np.tile(np.arange(len(X)), T)
    uv, _ = project_obs(st, cam, pt)
    uv = uv + rng.normal(0, 0.5, uv.shape)
    start = st.copy()
    start.focals = np.array([320.0])
    a, ia = bundle_adjust(start, cam, pt, uv, max_nfev=20)
    b, ib = bundle_adjust(start, cam, pt, uv, max_nfev=20, marginals=True)
    for k in ("rvecs", "ts", "focals", "points"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    assert np.array_equal(ia["residuals"], ib["residuals"])
    assert np.isfinite(ib["focal_sigma_px"]).all() and ib["focal_sigma_px"][0] > 0
    assert "focal_sigma_px" not in ia
