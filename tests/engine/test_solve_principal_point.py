"""Principal-point self-calibration (engine.solve.principal_point) on synthetic scenes.

Scenes (tests/engine/solve_synth.py): 320x240, 0.3 px noise, 2 % gross-outlier tracks, rendered
with the principal point moved by (+9, -6) px from the centre (159.5 -> 168.5, 119.5 -> 113.5):
every observation moves by the same (dx, dy) and visibility is re-clipped to the frame, which is
exactly a render with an off-centre principal point.

Measured (2-core box) tolerances: a nodal pan/tilt with a wide lens (f = 200 px, ~77 deg) pins
the point to +-0.15 px (1 sigma) and recovers it within 0.12 px; with the point assumed at the
centre the same shot's focal is 1.9 % off and its rotations 0.6 deg. A hand-held orbit with the
same lens pins it to +-1.2 px and recovers it within 1.5 px (seeds 11/21: within 1.5-2.7 sigma).
A long lens (f = 800 px, ~23 deg) leaves it at +-7 px: kept at the centre.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_synth import ate, make_scene, rotation_errors_deg  # noqa: E402

from engine.solve.pipeline import solve_cameras  # noqa: E402
from engine.solve.principal_point import PP_SIGMA_MAX_FRAC, parse_principal_point  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZE = (320, 240)
CENTRE = ((SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2)
SHIFT = (9.0, -6.0)


def shifted(sc: dict, dx: float, dy: float) -> dict:
    """The scene as seen through a camera whose principal point is moved by (dx, dy) px."""
    W, H = sc["W"], sc["H"]
    true = sc["true_2d"] + [dx, dy]
    vis = sc["visible"] & (true[..., 0] > 0) & (true[..., 0] < W - 1) & \
        (true[..., 1] > 0) & (true[..., 1] < H - 1)
    xy = sc["tracks_2d"].astype(np.float64) + [dx, dy]
    xy[~vis] = np.nan
    out = dict(sc, tracks_2d=xy.astype(np.float32), visible=vis, K=sc["K"].copy())
    out["K"][:, 0, 2] += dx
    out["K"][:, 1, 2] += dy
    return out


def _solve(sc, **kw):
    return solve_cameras(sc["tracks_2d"], sc["visible"], None, SIZE, **kw)


def _focal_err(sol, sc) -> float:
    return float(np.abs(sol.K[:, 0, 0] / sc["focals"] - 1).max())


@pytest.fixture(scope="module")
def tripod_off():
    return shifted(make_scene("tripod", T=24, n_points=900, W=320, H=240, seed=12, focal=200.0),
                   *SHIFT)


def test_tripod_off_centre_principal_point_is_recovered(tripod_off):
    sc = tripod_off
    auto = _solve(sc)
    rep = auto.report
    assert auto.mode == "tripod"
    assert rep["principal_point_solved"] is True and rep["principal_point_source"] == "auto"
    true = sc["K"][0, :2, 2]
    err = np.abs(np.array(rep["principal_point"]) - true)
    assert err.max() <= 0.5, f"principal point off by {err} px"
    assert 0 < rep["principal_point_sigma_px"] < PP_SIGMA_MAX_FRAC * SIZE[0]
    assert rep["principal_point_reason"].startswith("solved")
    assert np.allclose(auto.K[:, :2, 2], rep["principal_point"], atol=1e-3)  # written into K
    assert _focal_err(auto, sc) <= 0.01
    # assuming the centre costs this shot its lens and rotations: the solved point fixes both
    centre = _solve(sc, principal_point="centre")
    assert centre.report["principal_point_solved"] is False
    assert centre.report["principal_point"] == list(CENTRE)
    assert _focal_err(auto, sc) < 0.25 * _focal_err(centre, sc)
    rot_auto = rotation_errors_deg(auto.cam_to_world, sc["c2w"]).max()
    rot_centre = rotation_errors_deg(centre.cam_to_world, sc["c2w"]).max()
    assert rot_auto < 0.1 < rot_centre


def test_known_principal_point_is_used(tripod_off):
    sc = tripod_off
    true = (float(sc["K"][0, 0, 2]), float(sc["K"][0, 1, 2]))
    sol = _solve(sc, principal_point=true)
    assert np.allclose(sol.K[:, 0, 2], true[0]) and np.allclose(sol.K[:, 1, 2], true[1])
    assert sol.report["principal_point_source"] == "given"
    assert sol.report["principal_point_solved"] is False
    assert _focal_err(sol, sc) <= 0.005


@pytest.mark.slow  # ~11 s: one general-motion solve with 1500 tracks
def test_orbit_off_centre_principal_point_is_recovered():
    # general motion: a hand-held orbit with a wide lens and enough tracks pins it too
    sc = shifted(make_scene("orbit", T=24, n_points=1500, W=320, H=240, seed=11, focal=200.0),
                 *SHIFT)
    sol = _solve(sc)
    rep = sol.report
    assert sol.mode == "general" and rep["principal_point_solved"] is True
    err = np.abs(np.array(rep["principal_point"]) - sc["K"][0, :2, 2])
    sig = rep["principal_point_sigma_px"]
    assert err.max() <= max(3 * sig, 1.0), f"off by {err} px, sigma {sig} px"
    assert _focal_err(sol, sc) <= 0.01
    a, length = ate(sol.cam_to_world, sc["c2w"])
    assert a / length <= 0.005


def test_long_lens_keeps_the_centre():
    # small field of view: a principal-point shift is indistinguishable from a camera rotation
    sc = shifted(make_scene("orbit", T=16, n_points=700, W=320, H=240, seed=19, focal=800.0),
                 *SHIFT)
    sol = _solve(sc)
    rep = sol.report
    assert rep["principal_point_solved"] is False
    assert rep["principal_point"] == list(CENTRE)
    assert np.allclose(sol.K[:, :2, 2], CENTRE)
    assert rep["principal_point_sigma_px"] > PP_SIGMA_MAX_FRAC * SIZE[0]
    assert "does not pin the principal point" in rep["principal_point_reason"]


def test_centred_scene_is_not_worse():
    # a wide-lens tripod pins the point well: auto must find the centre and change nothing
    sc = make_scene("tripod", T=24, n_points=900, W=320, H=240, seed=12, focal=200.0)
    auto, centre = _solve(sc), _solve(sc, principal_point="centre")
    rep = auto.report
    assert np.abs(np.array(rep["principal_point"]) - CENTRE).max() <= 0.5
    assert _focal_err(auto, sc) <= _focal_err(centre, sc) + 0.002
    assert rotation_errors_deg(auto.cam_to_world, sc["c2w"]).max() <= \
        rotation_errors_deg(centre.cam_to_world, sc["c2w"]).max() + 0.01
    assert rep["reproj_median_px"] <= centre.report["reproj_median_px"] + 0.01


def test_parse_principal_point():
    assert parse_principal_point("auto") == "auto"
    assert parse_principal_point("Centre") == parse_principal_point("center") == "centre"
    assert parse_principal_point(" 168.5, 113.25") == (168.5, 113.25)
    for bad in ("", "1", "1,2,3", "x,2", "nan,1"):
        with pytest.raises(ValueError, match="principal point"):
            parse_principal_point(bad)


def test_cli_rejects_a_bad_principal_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "engine", "solve", str(tmp_path / "t.npz"),
                        "--out", str(tmp_path / "o.npz"), "--principal-point", "1;2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "principal point must be" in r.stderr
    assert not (tmp_path / "o.npz").exists()
