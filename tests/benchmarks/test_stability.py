"""benchmarks.stability: the jittered track file and the min / median / max summary."""
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from solve_synth import make_scene  # noqa: E402

from benchmarks.stability import hide_near_query, jittered, summary_rows  # noqa: E402
from engine.trackfile import TrackData, make_metadata  # noqa: E402


def _data():
    sc = make_scene("orbit", T=10, n_points=200, W=320, H=240, seed=1, outlier_frac=0.0)
    N, T = sc["visible"].shape
    xy = sc["true_2d"].astype(np.float32)
    q = np.c_[np.zeros(N), xy[:, 0]].astype(np.float32)
    return TrackData(query=q, tracks_2d=xy, visible=sc["visible"].copy(),
                     confidence=sc["visible"].astype(np.float32),
                     tracks_3d=np.full((N, T, 3), np.nan, np.float32),
                     cam_to_world=np.full((T, 4, 4), np.nan, np.float32),
                     K=np.full((T, 3, 3), np.nan, np.float32),
                     metadata=make_metadata((320, 240), (0, T - 1), 24.0))


def test_jitter_moves_only_the_2d_tracks_by_sigma():
    data = _data()
    xy = np.asarray(data.tracks_2d)
    a, b = jittered(data, 0.01, 1), jittered(data, 0.01, 2)
    d = (np.asarray(a.tracks_2d, np.float64) - xy).ravel()
    assert 0.008 < d.std() < 0.012 and abs(d.mean()) < 1e-3
    assert not np.array_equal(a.tracks_2d, b.tracks_2d)           # seeds differ
    assert np.array_equal(jittered(data, 0.01, 1).tracks_2d, a.tracks_2d)   # and repeat
    assert np.array_equal(a.visible, data.visible) and np.array_equal(a.query, data.query)


def test_summary_gives_min_median_max_and_counts_failures():
    runs = [{"seed": 0, "cam.focal_err_median": 0.01, "cam.ate_pct": 0.2,
             "3d.apd3d_static": 0.3, "2d.average_jaccard": 0.5},
            {"seed": 1, "cam.focal_err_median": 0.04, "cam.ate_pct": 0.4,
             "3d.apd3d_static": 0.1, "2d.average_jaccard": 0.6},
            {"seed": 2, "cam.focal_err_median": 0.02, "cam.ate_pct": 0.3,
             "3d.apd3d_static": 0.2, "2d.average_jaccard": 0.7},
            {"seed": 3, "error": "solve failed"}]
    rows = summary_rows({"dynamic_2": runs})
    assert rows[-1] == ("| dynamic_2 | 4 (1) | 1.00 / 2.00 / 4.00 | 0.200 / 0.300 / 0.400 | "
                        "0.100 / 0.200 / 0.300 | 0.500 / 0.600 / 0.700 |")


def test_hide_near_query_hides_only_the_frames_next_to_each_query_frame():
    data = _data()
    N, T = data.visible.shape
    q = np.asarray(data.query).copy()
    q[: N // 2, 0] = 5                      # half the tracks start mid-clip
    data = dataclasses.replace(data, query=q, visible=np.ones((N, T), bool))
    assert hide_near_query(data, 1) is data
    vis = np.asarray(hide_near_query(data, 3).visible)
    d = np.abs(np.arange(T)[None] - q[:, :1].astype(int))
    assert not vis[(d >= 1) & (d <= 2)].any()       # 1 and 2 frames away: hidden
    assert vis[(d == 0) | (d >= 3)].all()           # the query frame and the rest: kept
    assert np.array_equal(hide_near_query(data, 3).tracks_2d, data.tracks_2d)
