"""The harness end to end on the quick suite (real renders, real baselines, real scoring).

Clips are rendered once into ``bench_cache/`` (the harness default, git-ignored) and reused, so
only the first run pays the ~1 min of rendering. Worldtrack itself is left out here (its own
tests cover it, and its run time is not this test's to bound); its "not available" reporting is
exercised with a real failing run.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import run as H

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "bench_cache"

needs_generator = pytest.mark.skipif(H.generator_available() is not None,
                                     reason=f"cannot render clips: {H.generator_available()}")


def test_parse_methods_and_unknown():
    assert H.parse_methods("dis, lk,dis") == ["dis", "lk"]
    assert H.parse_methods(H.DEFAULT_METHODS)[0] == "worldtrack"
    with pytest.raises(SystemExit):
        H.parse_methods("dis,raft")


def test_unavailable_method_is_reported(tmp_path):
    clip = H.Clip("missing", "static", tmp_path / "no_frames", np.zeros((2, 3), np.float32), None,
                  tmp_path / "work")
    r = H.run_method("worldtrack", clip)
    assert not r.ok and r.reason
    md = H.render_markdown("quick", ["worldtrack"], [r], None, "python -m benchmarks.run", 1.0)
    assert "**worldtrack**: not available (" in md
    assert "Machine:" in md and "cores" in md


@needs_generator
@pytest.mark.blender
def test_quick_suite_end_to_end(tmp_path):
    out = tmp_path / "BENCH.md"
    methods = "dis,lk,cv_camera" + (",libmv" if importlib.util.find_spec("bpy") else "")
    cmd = [sys.executable, "-m", "benchmarks.run", "--suite", "quick", "--out", str(out),
           "--methods", methods, "--cache", str(CACHE)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    md = out.read_text()
    for title in ("2D tracking", "Camera solve", "3D world-centric", "Cost"):
        assert title in md
    assert "python -m benchmarks.run --suite quick" in md
    for kind in H.KINDS:
        assert f"| {kind} " in md or f" {kind} |" in md
    blob = json.loads(out.with_suffix(".json").read_text())
    res = blob["results"]
    n_clips = len(H.suite_settings("quick"))
    assert len(res) == n_clips * len(methods.split(","))
    ok = [x for x in res if x["ok"]]
    assert {x["method"] for x in ok} >= {"dis", "lk", "cv_camera"}
    for x in ok:
        aj = x["scores"]["2d.average_jaccard"]
        assert 0.0 <= aj <= 1.0 and x["cost"]["wall_s"] > 0 and x["cost"]["peak_rss_mb"] > 10
    # the flow baselines really track: better than a frozen prediction (each query held still,
    # always visible) on every clip
    from benchmarks import metrics as M
    from engine.trackfile import load_trackfile

    for x in ok:
        if x["method"] not in ("dis", "lk"):
            continue
        gt = load_trackfile(CACHE / "quick" / x["clip"] / "gt.npz")
        q = np.asarray(gt.query)
        frozen = np.repeat(q[:, None, 1:], gt.n_frames, axis=1)
        f = M.tapvid_metrics(q[:, 0], ~np.asarray(gt.visible), np.asarray(gt.tracks_2d),
                             np.zeros_like(gt.visible), frozen, image_size=gt.image_size)
        assert x["scores"]["2d.average_jaccard"] > f["average_jaccard"], (x, f)
    cams = [x for x in ok if x["method"] == "cv_camera"]
    assert all("cam.ate" in x["scores"] for x in cams)
    assert np.nanmean([x["scores"]["cam.success"] for x in cams]) > 0


@needs_generator
def test_reuse_takes_the_recorded_output_and_cost(tmp_path):
    st = H.suite_settings("quick")[0]
    cdir = H.ensure_clip(CACHE, "quick", st, print)
    from engine.trackfile import load_trackfile

    gt = load_trackfile(cdir / "gt.npz")
    clip = H.Clip(f"{st.kind}_{st.seed}", st.kind, cdir / "frames", np.asarray(gt.query), None,
                  tmp_path / "work")
    first = H.run_method("dis", clip)
    assert first.ok and first.cost["wall_s"] > 0
    stamp = first.out.stat().st_mtime_ns
    again = H.run_method("dis", clip, reuse=True)
    assert again.ok and again.out == first.out and again.cost == first.cost
    assert first.out.stat().st_mtime_ns == stamp  # not run again
    fresh = H.run_method("dis", clip)  # without reuse it runs again
    assert fresh.ok and fresh.out.stat().st_mtime_ns != stamp


def test_reuse_json_takes_results_only_where_the_cache_has_none(tmp_path):
    """``--reuse-json``: a reused method with no recorded output takes its scores and cost from
    the earlier report; one with a recorded output is scored from that output instead."""
    blob = {"results": [{"method": "dis", "clip": "static_0", "kind": "static", "ok": True,
                         "reason": "", "cost": {"wall_s": 3.5},
                         "scores": {"2d.average_jaccard": 0.61}}],
            "real": {"available": True, "kitti": [
                {"method": "cv_camera", "clip": "kitti_seq1", "kind": "kitti", "ok": False,
                 "reason": "solve failed", "cost": {}, "scores": {}}]}}
    path = tmp_path / "OLD.json"
    path.write_text(json.dumps(blob))
    prior = H.load_prior(path)
    assert set(prior) == {("dis", "static_0"), ("cv_camera", "real:kitti_seq1")}
    clip = H.Clip("static_0", "static", tmp_path / "frames", np.zeros((1, 3), np.float32), None,
                  tmp_path / "work")
    r = H.prior_result(prior, "dis", clip)
    assert r.ok and r.scores["2d.average_jaccard"] == 0.61 and r.cost["wall_s"] == 3.5
    assert H.prior_result(prior, "lk", clip) is None             # not in the earlier report
    assert H.prior_result(None, "dis", clip) is None
    k = H.prior_result(prior, "cv_camera", H.Clip("kitti_seq1", "kitti", tmp_path, clip.query,
                                                  None, tmp_path / "k"), "real:kitti_seq1")
    assert not k.ok and k.reason == "solve failed"
    # a recorded output in the cache wins: it is scored again, not copied
    clip.work.mkdir()
    out = clip.work / "dis.npz"
    out.write_bytes(b"x")
    (clip.work / "dis.run.json").write_text(json.dumps({"out": str(out), "reason": "", "cost": {}}))
    assert H.prior_result(prior, "dis", clip) is None
    # the earlier report's rows render like fresh ones
    md = H.render_markdown("full", ["dis"], [r], None, "python -m benchmarks.run", 1.0)
    assert "0.610" in md


def test_report_keeps_the_hand_recorded_section(tmp_path):
    out = tmp_path / "B.md"
    assert H.kept_section(out) == ""
    out.write_text("# old tables\n" + H.KEEP_MARKER + "\n## GPU run\n| a | b |\n")
    assert H.kept_section(out).startswith("\n" + H.KEEP_MARKER)
    assert "## GPU run" in H.kept_section(out) and "old tables" not in H.kept_section(out)


@needs_generator
def test_reuse_track_runs_only_the_solve_on_the_recorded_tracks(tmp_path):
    """``--reuse-track``: the recorded ``engine track`` output and its cost stand, only
    ``engine solve`` runs (here on the clip's exact 2D tracks, a valid track file)."""
    import os
    import shutil

    st = H.suite_settings("quick")[0]
    cdir = H.ensure_clip(CACHE, "quick", st, print)
    from engine.trackfile import load_trackfile

    gt = load_trackfile(cdir / "gt.npz")
    work = tmp_path / "work"
    work.mkdir()
    clip = H.Clip(f"{st.kind}_{st.seed}", st.kind, cdir / "frames", np.asarray(gt.query), None, work)
    tracked = work / "worldtrack_track.npz"
    shutil.copy(cdir / "gt.npz", tracked)
    # a record in the old form (total cost only): the track step is the total less the solve's
    # share, read from when each step's log was last written
    (work / "worldtrack.0.log").write_text("track\n")
    (work / "worldtrack.1.log").write_text("solve\n")
    os.utime(work / "worldtrack.0.log", (1000.0, 1000.0))
    os.utime(work / "worldtrack.1.log", (1030.0, 1030.0))
    (work / "worldtrack.run.json").write_text(json.dumps({
        "out": str(work / "worldtrack.npz"), "reason": "",
        "cost": {"wall_s": 130.0, "peak_rss_mb": 700.0, "throughput_pf_s": 1.0}}))
    step = H.recorded_track_step(work, "worldtrack", json.loads((work / "worldtrack.run.json").read_text()))
    assert step == {"wall_s": 100.0, "peak_rss_mb": 700.0}
    stamp = tracked.stat().st_mtime_ns

    r = H.run_method("worldtrack", clip, reuse_track=True)
    assert r.ok, r.reason
    assert tracked.stat().st_mtime_ns == stamp  # the track step did not run
    assert r.out == work / "worldtrack.npz" and load_trackfile(r.out).cam_to_world is not None
    assert r.cost["wall_s"] > 100.0 and r.cost["peak_rss_mb"] >= 700.0
    rec = json.loads((work / "worldtrack.run.json").read_text())
    assert rec["steps"][0] == step and rec["steps"][1]["wall_s"] > 0  # per-step costs now kept
    assert H.recorded_track_step(work, "worldtrack", rec) == step
    s = H.score_synthetic(gt, load_trackfile(r.out), "worldtrack")
    assert s["cam.success"] == 1.0 and s["cam.focal_err_median"] < 0.05, s

    tracked.unlink()  # no recorded tracks: the whole method runs (and fails here: no such frames)
    assert H.recorded_track_step(work, "worldtrack", rec) is None
