"""The GPU measurement runner works end to end (here on the CPU, at a tiny size)."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnxruntime")

from benchmarks.gpu import choose_device, main  # noqa: E402


def test_runner_measures_dense_and_stride4(tmp_path):
    device, why = choose_device()
    assert device in ("cuda", "torch-cuda", "cpu") and why
    assert main(["--size", "64x48", "--frames", "12", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gpu.json").read_text())
    dense, grid = res["runs"]["dense"], res["runs"]["stride4"]
    assert dense["n_tracks"] >= 64 * 48 and grid["n_tracks"] == 16 * 12
    for r in (dense, grid):
        assert r["median_err_px"] < 0.5 and r["within_1px"] > 0.8 and r["recall_visible"] > 0.8
        assert r["point_frames_per_s"] > 0 and r["peak_rss_mb"] > 0
        if shutil.which("nvidia-smi") is None:
            assert r["gpu_mem_mb"] is None
    assert not (tmp_path / "dense.npz").exists()      # the big files are not kept


def test_runs_are_chosen_and_bad_names_refused(tmp_path):
    assert main(["--size", "64x48", "--frames", "8", "--runs", "stride4", "--out",
                 str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert list(res["runs"]) == ["stride4"] and res["render_s"] >= 0
    with pytest.raises(SystemExit):
        main(["--size", "64x48", "--frames", "8", "--runs", "dense,nope", "--out", str(tmp_path)])
