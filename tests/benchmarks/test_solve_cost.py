"""The solve-cost benchmark: thinned track files keep evenly spaced rows, and (slow) a whole run
on the bundled sample clip tracks, solves and reports every size."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.solve_cost import _thin, main, table
from engine.trackfile import TrackData, load_trackfile, make_metadata, save_trackfile

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample" / "clip.mp4"


def test_thinned_track_file_keeps_evenly_spaced_rows(tmp_path):
    N, T = 40, 6
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 60, (N, T, 2)).astype(np.float32)
    d = TrackData(query=np.c_[np.zeros(N), xy[:, 0]].astype(np.float32), tracks_2d=xy,
                  visible=np.ones((N, T), bool), confidence=np.ones((N, T), np.float32),
                  tracks_3d=np.full((N, T, 3), np.nan, np.float32),
                  cam_to_world=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                  K=np.tile(np.eye(3, dtype=np.float32), (T, 1, 1)),
                  metadata=make_metadata((64, 48), (0, T - 1), 24.0))
    src = tmp_path / "tracks.npz"
    save_trackfile(src, d)
    out = load_trackfile(_thin(src, 0.25, tmp_path))
    rows = np.array([0, 4, 9, 13, 17, 22, 26, 30, 35, 39])
    assert out.n_tracks == 10 and out.n_frames == T
    np.testing.assert_array_equal(np.asarray(out.tracks_2d), xy[rows])
    assert out.metadata["image_size"] == [64, 48]


def test_table_lists_every_row():
    rows = [{"tracks": 1000, "frames": 12, "wall_s": 3.2, "peak_rss_mb": 300.0,
             "camera_solve_s": 1.0, "lift_s": 0.5, "refine_s": 1.5, "final_pass_s": 1.0,
             "re_solved": False}]
    t = table(rows)
    assert "| 1,000 × 12 | 3.2 | 300 | 1.0 | 0.5 | 1.5 (1.0) | no |" in t


@pytest.mark.slow
def test_whole_run_on_the_sample_clip(tmp_path):
    assert main(["--clip", str(SAMPLE), "--frames", "8,12", "--fractions", "0.5",
                 "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "solve_cost.json").read_text())["rows"]
    assert sorted((r["frames"], r["tracks"]) for r in rows)[0][0] == 8
    assert len(rows) == 3 and all(r["wall_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    full = [r for r in rows if r["frames"] == 12]
    assert sorted(r["tracks"] for r in full)[0] * 2 in (sorted(r["tracks"] for r in full)[1],
                                                        sorted(r["tracks"] for r in full)[1] + 1)
