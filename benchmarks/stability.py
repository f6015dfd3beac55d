"""How stable is the camera solve: the same tracks, jittered far below any tracker's noise.

``python -m benchmarks.stability --clips dynamic_2,zoom_0 --seeds 4 --sigma 0.001`` takes the
cached benchmark clips' recorded Worldtrack track files
(``bench_cache/results/full/<clip>/worldtrack_track.npz``, written by ``benchmarks.run``) and
solves each one ``--seeds`` times with ``engine solve`` (the harness's command, with the clip's
footage): once as recorded and ``seeds - 1`` times with N(0, ``--sigma``) px added to every 2D
coordinate. At 0.001 px the jitter is ~300x below the tracks' own error, so any spread in the
results is the solve's own sensitivity (discrete choices such as keyframes, RANSAC samples and
inlier sets that flip on the last bits of a number), not information in the tracks: it is the
error bar of every single-run camera number in BENCHMARKS.md. ``--no-refine`` solves once
without the track -> solve -> refine rounds (the first solve alone, ~10x faster).
``--hide-near-query G`` hides, in every run's input, each track's observations 1 .. G-1 frames
from its query frame (the query frame itself stays): a study of the tracker's error near the
query frame, where it keeps the least parallax (see BENCHMARKS.md).

Scored the harness's way (:func:`benchmarks.run.score_synthetic`). Results: a markdown table on
stdout (per clip: focal error, ATE and static APD as min / median / max over the runs) and
``<out>/stability.json`` with every run (also the solve's own focal uncertainty, median
reprojection error and initial pair per run).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("cam.focal_err_median", "cam.ate_pct", "3d.apd3d_static", "2d.average_jaccard")


def jittered(data, sigma: float, seed: int):
    """``data`` (a :class:`engine.trackfile.TrackData`) with N(0, ``sigma``) px on every 2D
    coordinate (visibility, queries and metadata unchanged)."""
    rng = np.random.default_rng(seed)
    xy = np.asarray(data.tracks_2d, np.float64) + rng.normal(0, sigma, data.tracks_2d.shape)
    return dataclasses.replace(data, tracks_2d=xy.astype(np.float32))


def hide_near_query(data, gap: int):
    """``data`` with each track's observations 1 .. ``gap`` - 1 frames from its query frame
    hidden (``gap`` <= 1: unchanged)."""
    if gap <= 1:
        return data
    T = np.asarray(data.visible).shape[1]
    q = np.round(np.asarray(data.query, np.float64)[:, 0]).astype(int)
    d = np.abs(np.arange(T)[None] - q[:, None])
    vis = np.asarray(data.visible, bool) & ~((d > 0) & (d < gap))
    return dataclasses.replace(data, visible=vis)


def solve_scores(track_path: Path, out_path: Path, frames: Path, gt, refine: bool) -> dict:
    """``engine solve`` on ``track_path`` (footage ``frames``), scored against ``gt``."""
    from engine.trackfile import load_trackfile

    from .run import score_synthetic

    cmd = [sys.executable, "-m", "engine", "solve", str(track_path), "--out", str(out_path),
           "--clip", str(frames), "--progress", "quiet"]
    if not refine:
        cmd.append("--no-refine")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    res = load_trackfile(out_path)
    s = score_synthetic(gt, res, "worldtrack")
    rep = res.metadata.get("solve", {})
    # the solve's own view of the run: does its uncertainty flag the runs that went wrong?
    own = {"focal_sigma_rel": rep.get("focal_sigma_rel"), "reproj_median_px": rep.get(
        "reproj_median_px"), "init_pair": rep.get("init_pair")}
    return {**{k: float(s[k]) for k in KEYS}, **own}


def summary_rows(results: dict[str, list[dict]]) -> list[str]:
    """Markdown rows: per clip, min / median / max of each score over its successful runs."""
    def span(vals: list[float], pct: bool) -> str:
        if not vals:
            return "–"
        v = np.array(vals) * (100 if pct else 1)     # focal error: fraction -> %
        f = "{:.2f}" if pct else "{:.3f}"
        return " / ".join(f.format(x) for x in (v.min(), np.median(v), v.max()))

    rows = ["| clip | runs (failed) | focal error % | ATE % of path | static APD | AJ |",
            "|---|---|---|---|---|---|"]
    for clip, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        cols = [span([r[k] for r in ok if np.isfinite(r[k])], pct=k == "cam.focal_err_median")
                for k in KEYS]
        rows.append(f"| {clip} | {len(runs)} ({len(runs) - len(ok)}) | " + " | ".join(cols) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stability",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default="dynamic_2")
    ap.add_argument("--seeds", type=int, default=4, help="runs per clip (the first unjittered)")
    ap.add_argument("--sigma", type=float, default=0.001, help="jitter, px")
    ap.add_argument("--no-refine", action="store_true", help="first solve only (fast)")
    ap.add_argument("--hide-near-query", type=int, default=0, metavar="G",
                    help="hide observations 1 .. G-1 frames from each track's query frame")
    ap.add_argument("--cache", default="bench_cache")
    ap.add_argument("--out", default="bench_out/stability")
    a = ap.parse_args(argv)
    from engine.trackfile import load_trackfile, save_trackfile

    cache = Path(a.cache).resolve()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for clip in [c for c in a.clips.split(",") if c]:
        rec = cache / "results" / "full" / clip / "worldtrack_track.npz"
        frames = cache / "full" / clip / "frames"
        if not rec.is_file() or not frames.is_dir():
            print(f"{clip}: no recorded track file or frames (run benchmarks.run first)",
                  file=sys.stderr)
            continue
        gt = load_trackfile(cache / "full" / clip / "gt.npz")
        data = hide_near_query(load_trackfile(rec, mmap=False), a.hide_near_query)
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(a.seeds):
                src = rec
                if seed or a.hide_near_query > 1:
                    src = Path(tmp) / f"in_{seed}.npz"
                    save_trackfile(src, jittered(data, a.sigma, seed) if seed else data)
                r = solve_scores(src, Path(tmp) / f"out_{seed}.npz", frames, gt,
                                 refine=not a.no_refine)
                runs.append({"seed": seed, **r})
                print(clip, runs[-1], file=sys.stderr, flush=True)
        results[clip] = runs
    (out / "stability.json").write_text(json.dumps(
        {"sigma_px": a.sigma, "refine": not a.no_refine,
         "hide_near_query": a.hide_near_query, "results": results}, indent=1))
    print("\n".join(summary_rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
