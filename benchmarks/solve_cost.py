"""How the cost of `engine solve` grows with frames and tracks, on dense tracks of real footage.

    python -m benchmarks.solve_cost --clip bench_cache/full/static_0/frames --out bench_out/solve_cost

The clip is tracked densely (`engine track --device cpu`, every working pixel) over its first
T frames for each T of ``--frames``; the longest of these track files is also thinned to the
``--fractions`` of its tracks (evenly spaced rows). Each file is then solved with the defaults
(`engine solve --clip CLIP`, refinement and its appearance passes included) as a child process,
one at a time: wall time and that child's own peak RSS (:func:`benchmarks.metrics.run_measured`),
and the stage times from the solve report (camera solve, lift, refinement, its final pass).
Track files are reused when present (``--retrack`` makes them again). Prints a markdown table
and writes ``solve_cost.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .metrics import run_measured


def _track(clip: Path, frames: int, out: Path, retrack: bool) -> Path:
    path = out / f"tracks_{frames}f.npz"
    if retrack or not path.exists():
        cost = run_measured([sys.executable, "-m", "engine", "track", str(clip), "--out", str(path),
                             "--frames", f"0:{frames - 1}", "--device", "cpu",
                             "--progress", "quiet"], log_path=str(out / f"track_{frames}f.log"))
        if cost.returncode != 0:
            raise SystemExit(f"engine track failed (exit {cost.returncode}): see "
                             f"{out / f'track_{frames}f.log'}")
    return path


def _thin(src: Path, fraction: float, out: Path) -> Path:
    """The track file ``src`` with an evenly spaced ``fraction`` of its tracks."""
    from engine.trackfile import TrackData, load_trackfile, save_trackfile

    d = load_trackfile(src)
    n = max(1, int(round(fraction * d.n_tracks)))
    rows = np.unique(np.linspace(0, d.n_tracks - 1, n).round().astype(np.int64))
    path = out / f"{src.stem}_{len(rows)}t.npz"
    if not path.exists():
        def sub(a):
            return None if a is None else np.asarray(a[rows])
        save_trackfile(path, TrackData(
            query=sub(d.query), tracks_2d=sub(d.tracks_2d), visible=sub(d.visible),
            confidence=sub(d.confidence), tracks_3d=sub(d.tracks_3d),
            cam_to_world=np.asarray(d.cam_to_world), K=np.asarray(d.K),
            metadata=dict(d.metadata), group=sub(d.group), colors=sub(d.colors),
            reproj_error=sub(d.reproj_error), depth=None if d.depth is None else np.asarray(d.depth)))
    return path


def _solve(tracks: Path, clip: Path, out: Path) -> dict:
    from engine.trackfile import load_trackfile

    solved = out / f"{tracks.stem}_solved.npz"
    log = out / f"{tracks.stem}_solve.log"
    cost = run_measured([sys.executable, "-m", "engine", "solve", str(tracks), "--out", str(solved),
                         "--clip", str(clip), "--progress", "quiet"], log_path=str(log))
    if cost.returncode != 0:
        raise SystemExit(f"engine solve failed (exit {cost.returncode}): see {log}")
    d = load_trackfile(solved, check=False)
    rep = d.metadata["solve"]
    ref = rep.get("refine", {})
    row = {"tracks": d.n_tracks, "frames": d.n_frames, "wall_s": round(cost.wall_s, 2),
           "peak_rss_mb": round(cost.peak_rss_mb, 1),
           "camera_solve_s": round(rep["timings"].get("restarts_total",
                                                      rep["timings"].get("total", 0.0)), 2),
           "lift_s": round(rep["timings"].get("lift", 0.0), 2),
           "refine_s": ref.get("seconds"), "final_pass_s": ref.get("final", {}).get("seconds"),
           "re_solved": any("skipped" not in e for e in ref.get("rounds", [])[1:])}
    solved.unlink()         # (the numbers are kept; the solved file is ~1 KB per track)
    return row


def table(rows: list[dict]) -> str:
    head = ("| tracks × frames | wall s | peak RSS MiB | camera solve s | lift s | refine s "
            "(final pass) | re-solved |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['tracks']:,} × {r['frames']} | {r['wall_s']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['camera_solve_s']:.1f} | {r['lift_s']:.1f} | "
                     f"{r['refine_s']:.1f} ({r['final_pass_s']:.1f}) | "
                     f"{'yes' if r['re_solved'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.solve_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="footage: image folder or video")
    ap.add_argument("--frames", default="12,24,48", help="clip lengths to track (first T frames)")
    ap.add_argument("--fractions", default="0.125,0.25,0.5",
                    help="fractions of the longest file's tracks solved as well")
    ap.add_argument("--retrack", action="store_true", help="track again even if the files exist")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    clip, out = Path(a.clip), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lengths = sorted(int(v) for v in a.frames.split(","))
    files = {T: _track(clip, T, out, a.retrack) for T in lengths}
    longest = files[lengths[-1]]
    todo = [files[T] for T in lengths] + [_thin(longest, float(f), out)
                                          for f in a.fractions.split(",") if f.strip()]
    rows = []
    for path in todo:
        rows.append(_solve(path, clip, out))
        print(f"  {rows[-1]}", flush=True)
    rows.sort(key=lambda r: (r["frames"], r["tracks"]))
    (out / "solve_cost.json").write_text(json.dumps({"clip": str(clip), "rows": rows}, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
