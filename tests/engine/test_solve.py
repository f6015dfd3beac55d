"""Camera solve (engine.solve) on synthetic scenes with exact ground truth (tests/engine/solve_synth.py).

Scenes: 320x240, 0.3 px noise, 2 % gross-outlier tracks (jumps and drifts). Thresholds are the
issue's targets where the synthetic data can reach them: the median reprojection error is measured
against the *noisy* observations, whose own median error norm is 0.3 * 1.18 = 0.35 px, so the
check there is "at the noise floor" (<= 0.45 px), not <= 0.3 px.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_synth import ate, make_scene, rotation_errors_deg, to_trackdata  # noqa: E402

from engine.solve import focal_px_from_mm, predict_positions, solve_trackfile  # noqa: E402
from engine.solve.pipeline import SolveError, solve_cameras  # noqa: E402
from engine.trackfile import load_trackfile, save_trackfile  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZE = (320, 240)


def _solve(sc, **kw):
    return solve_cameras(sc["tracks_2d"], sc["visible"], None, SIZE, **kw)


def _focal_err(sol, sc):
    return np.abs(sol.K[:, 0, 0] / sc["focals"] - 1)


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
    # the outlier tracks must not be among the static points the solve kept
    kept = set(sol.sample_ids[sol.sample_static].tolist())
    assert len(kept & set(orbit["outliers"].tolist())) <= 0.2 * len(orbit["outliers"])


def test_known_focal_is_kept(orbit):
    f = float(orbit["focals"][0])
    sol = _solve(orbit, focal=f)
    assert np.allclose(sol.K[:, 0, 0], f)
    a, length = ate(sol.cam_to_world, orbit["c2w"])
    assert a / length <= 0.005
    assert sol.report["focal_source"] == "given"


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
    r = subprocess.run([sys.executable, "-m", "engine", "solve", str(inp), "--out", str(cli_out),
                        "--focal", str(float(orbit["focals"][0])), "--progress", "quiet",
                        "--report", str(tmp_path / "rep.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "solved" in r.stdout
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["focal_source"] == "given"
    assert load_trackfile(cli_out).metadata["solve"]["focal_source"] == "given"
    r = subprocess.run([sys.executable, "-m", "engine", "solve", str(inp), "--out",
                        str(tmp_path / "x.npz"), "--focal-mm", "35"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "sensor-width" in r.stderr
