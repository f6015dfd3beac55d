"""What limits the camera and the 3D tracks: the solve, or the 2D tracks it is given?

``python -m benchmarks.ceiling --clips static_0,dynamic_0 --sigma 0.25`` takes cached benchmark
clips (``bench_cache/full/<clip>``, rendered by ``benchmarks.run``) and solves each one twice
with ``engine solve`` (the same command the harness runs, with the clip's footage):

* on **Worldtrack's own tracks** (``bench_cache/results/full/<clip>/worldtrack_track.npz``,
  recorded by the harness), and
* on the **true 2D tracks and visibility with Gaussian noise of ``--sigma`` px** on every
  coordinate (same queries), i.e. a tracker that is exactly as good as the noise.

Both are scored the harness's way (:func:`benchmarks.run.score_synthetic`): focal error, ATE,
static and dynamic APD, 2D AJ. It also reports the **triangulation ceiling**: the same noisy true
tracks triangulated with the TRUE cameras (linear least squares per static point), APD per
threshold, which no solve can beat at that noise level. And the **parallax slope** of
Worldtrack's raw tracks (:func:`parallax_slope`): how much of the true frame-to-frame parallax
its tracks keep (1 = all; below 1 the perspective reads weaker, i.e. as a longer focal);
with ``--from-query`` (:func:`query_parallax_slope`) the same between each track's query frame
and the frames 1, 2, 3, 4-7, 8-15, 16-31 and 32+ away from it. Results: markdown table on
stdout and ``<out>/ceiling.json``.

``--error-split`` asks which part of the tracker's error moves the camera: the first solve
(``engine solve --no-refine``, the camera every clip but one keeps) on Worldtrack's tracks, on
the TRUE positions + ``--sigma`` noise at exactly the tracker's observations that are truly
visible (:func:`truth_at_tracker_visibility`: same observation set, none of the tracker's
error), and on the tracker's own positions at only its observations within ``--gross`` px of
the truth (:func:`small_errors_only`: its gross errors removed by an oracle, its small ones
kept).
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

from . import metrics as M

ROOT = Path(__file__).resolve().parents[1]


def _check_queries(gt, rec) -> None:
    """ValueError unless the recorded tracks ``rec`` answer the ground truth's queries."""
    if not np.allclose(np.asarray(rec.query), np.asarray(gt.query)):
        raise ValueError("recorded tracks and ground truth have different queries")


def noisy_truth(gt, template, sigma: float, seed: int = 1):
    """``template`` (the recorded track file, for its metadata) with the true 2D tracks plus
    N(0, sigma) px noise and the true visibility."""
    _check_queries(gt, template)
    rng = np.random.default_rng(seed)
    xy = np.asarray(gt.tracks_2d, np.float64) + rng.normal(0, sigma, gt.tracks_2d.shape)
    vis = np.asarray(gt.visible, bool)
    return dataclasses.replace(template, tracks_2d=xy.astype(np.float32), visible=vis,
                               confidence=vis.astype(np.float32))


def truth_at_tracker_visibility(gt, rec, sigma: float, seed: int = 1):
    """``rec`` (the recorded track file) with the true 2D positions + N(0, ``sigma``) px at its
    observations that are truly visible (the rest hidden): the tracker's observation set
    without its position errors."""
    out = noisy_truth(gt, rec, sigma, seed)
    vis = np.asarray(rec.visible, bool) & np.asarray(gt.visible, bool)
    return dataclasses.replace(out, visible=vis, confidence=np.asarray(rec.confidence))


def small_errors_only(gt, rec, max_err_px: float = 2.0):
    """``rec`` with only its observations within ``max_err_px`` of the truth (on truly visible
    points) left visible: its small errors kept, its gross ones removed by an oracle."""
    _check_queries(gt, rec)
    err = np.linalg.norm(np.asarray(rec.tracks_2d, np.float64)
                         - np.asarray(gt.tracks_2d, np.float64), axis=-1)
    vis = np.asarray(rec.visible, bool) & np.asarray(gt.visible, bool) & (err < max_err_px)
    return dataclasses.replace(rec, visible=vis)


def triangulation_apd(gt, sigma: float, seed: int = 1) -> list[float]:
    """Per-threshold APD of static points triangulated from noisy true tracks with the true
    cameras (DLT over every visible frame), scored like :func:`metrics.world_track_metrics`."""
    rng = np.random.default_rng(seed)
    obs = np.asarray(gt.tracks_2d, np.float64) + rng.normal(0, sigma, gt.tracks_2d.shape)
    vis = np.asarray(gt.visible, bool)
    c2w, K = np.asarray(gt.cam_to_world, np.float64), np.asarray(gt.K, np.float64)
    P = np.einsum("tij,tjk->tik", K, np.linalg.inv(c2w)[:, :3, :])          # (T, 3, 4)
    static = np.asarray(gt.group) < 0
    X = np.full((len(obs), 3), np.nan)
    for i in np.flatnonzero(static & (vis.sum(1) >= 2)):
        t = np.flatnonzero(vis[i])
        A = np.concatenate([obs[i, t, :1] * P[t, 2] - P[t, 0], obs[i, t, 1:] * P[t, 2] - P[t, 1]])
        h = np.linalg.svd(A)[2][-1]
        X[i] = h[:3] / h[3]
    g3 = np.asarray(gt.tracks_3d, np.float64)
    err = np.linalg.norm(X[:, None, :] - g3, axis=-1)
    err = np.where(np.isfinite(err), err, np.inf)
    _, z = M.project(g3, c2w, K)
    unit = z / np.sqrt(K[:, 0, 0] * K[:, 1, 1])[None, :]
    m = M.tapvid_eval_mask(np.asarray(gt.query)[:, 0], g3.shape[1], "first") & vis & (z > 0) \
        & static[:, None]
    return [float(np.mean(err[m] < d * unit[m])) for d in M.PIXEL_THRESHOLDS]


def parallax_slope(gt, pred, gaps: tuple[int, ...] = (2, 4, 8), max_err_px: float = 2.0
                   ) -> dict[int, float]:
    """Per frame gap g: least-squares slope of the predicted parallax on the true parallax of
    static points between frames t and t + g.

    Parallax = what is left of a point's motion after the homography that best maps the TRUE
    positions of frame t onto those of frame t + g (fitted on all static points visible in both).
    The same homography is applied to the predicted positions, so a tracker that smooths its
    tracks towards the dominant (planar) motion gets a slope below 1. Only point pairs within
    ``max_err_px`` of the truth at both frames count (drift and outliers are another matter).
    Pixel coordinates of the track file; NaN for a gap without enough pairs.
    """
    gxy = np.asarray(gt.tracks_2d, np.float64)
    pxy = np.asarray(pred.tracks_2d, np.float64)
    vis = np.asarray(gt.visible, bool) & np.asarray(pred.visible, bool) \
        & (np.asarray(gt.group) < 0)[:, None]
    ok = vis & (np.linalg.norm(pxy - gxy, axis=-1) < max_err_px)
    T = gxy.shape[1]
    out: dict[int, float] = {}
    for g in gaps:
        num = den = 0.0
        for t in range(T - g):
            both = np.asarray(gt.visible, bool)[:, t] & np.asarray(gt.visible, bool)[:, t + g] \
                & (np.asarray(gt.group) < 0)
            if both.sum() < 8:
                continue
            terms = _slope_terms(gxy, pxy, both, ok[:, t] & ok[:, t + g], t, t + g)
            if terms is not None:
                num += terms[0]
                den += terms[1]
        out[g] = num / den if den > 0 else float("nan")
    return out


def _slope_terms(gxy: np.ndarray, pxy: np.ndarray, both: np.ndarray, m: np.ndarray, a: int,
                 b: int) -> tuple[float, float] | None:
    """Sums (predicted . true, true . true) of the parallax from frame a to frame b of the
    tracks ``m``: what is left after the homography fitted on the TRUE positions of the tracks
    ``both``, applied to each one's own frame-a position. None with fewer than 8 of either."""
    import cv2

    if both.sum() < 8 or m.sum() < 8:
        return None
    Hm, _ = cv2.findHomography(gxy[both, a], gxy[both, b], 0)
    if Hm is None:
        return None
    rg = gxy[m, b] - cv2.perspectiveTransform(gxy[m, a][None], Hm)[0]
    rp = pxy[m, b] - cv2.perspectiveTransform(pxy[m, a][None], Hm)[0]
    return float((rp * rg).sum()), float((rg * rg).sum())


QUERY_GAP_BINS = (1, 2, 3, 4, 8, 16, 32)


def query_parallax_slope(gt, pred, bins: tuple[int, ...] = QUERY_GAP_BINS,
                         max_err_px: float = 2.0) -> dict[int, float]:
    """:func:`parallax_slope` between each track's query frame q and its other frames t,
    by |t - q|: key b of the result covers b <= |t - q| < the next key (the last: and more).
    Homographies are fitted per (q, t) on the static tracks queried at q (true positions)."""
    gxy = np.asarray(gt.tracks_2d, np.float64)
    pxy = np.asarray(pred.tracks_2d, np.float64)
    gvis = np.asarray(gt.visible, bool)
    static = np.asarray(gt.group) < 0
    ok = gvis & np.asarray(pred.visible, bool) & (np.linalg.norm(pxy - gxy, axis=-1) < max_err_px)
    qt = np.round(np.asarray(gt.query, np.float64)[:, 0]).astype(int)
    T = gxy.shape[1]
    edges = np.asarray(bins)
    num = np.zeros(len(bins))
    den = np.zeros(len(bins))
    for q in np.unique(qt):
        rows = (qt == q) & static
        for t in range(T):
            if t == q or abs(t - q) < edges[0]:
                continue
            both = rows & gvis[:, q] & gvis[:, t]
            terms = _slope_terms(gxy, pxy, both, both & ok[:, q] & ok[:, t], q, t)
            if terms is not None:
                b = int(np.searchsorted(edges, abs(t - q), side="right")) - 1
                num[b] += terms[0]
                den[b] += terms[1]
    return {int(k): (n / d if d > 0 else float("nan")) for k, n, d in zip(bins, num, den)}


def plain_split(gt, frames: Path, outputs: dict, max_std: float | None = None) -> dict:
    """How each method's tracks do on plain vs textured query pixels.

    Plain: grey-level std (0..1) in the 7x7 box around the query pixel in its query frame at
    most ``max_std`` (None: the refinement's ``ANCHOR_MIN_TEXTURE``,
    :func:`benchmarks.breakdown.plain_queries`). Per method (``outputs``: name -> track data):
    the fraction of truly visible point-frames after the query frame within 1 px of the truth,
    on each set. Pixel units of the track file."""
    from .breakdown import PLAIN_STD, plain_queries

    q = np.asarray(gt.query, np.float32)
    T = np.asarray(gt.visible).shape[1]
    plain = plain_queries(frames, q, T, PLAIN_STD if max_std is None else max_std)
    m = np.asarray(gt.visible, bool) & (np.arange(T)[None] > q[:, :1])
    res = {"plain_fraction": float(plain.mean())}
    for name, d in outputs.items():
        e = np.linalg.norm(np.asarray(d.tracks_2d, np.float64) - np.asarray(gt.tracks_2d), axis=-1)
        res[name] = {"plain_lt1px": float(np.mean(e[m & plain[:, None]] < 1)),
                     "textured_lt1px": float(np.mean(e[m & ~plain[:, None]] < 1))}
    return res


def solve_and_score(track_path: Path, out_path: Path, frames: Path, gt,
                    refine: bool = True) -> dict[str, float]:
    from engine.trackfile import load_trackfile

    from .run import score_synthetic

    r = subprocess.run([sys.executable, "-m", "engine", "solve", str(track_path), "--out",
                        str(out_path), "--clip", str(frames)] + ([] if refine else ["--no-refine"]),
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    s = score_synthetic(gt, load_trackfile(out_path), "worldtrack")
    return {k: s[k] for k in ("cam.focal_err_median", "cam.ate_pct", "3d.apd3d_static",
                              "3d.apd3d_dynamic", "2d.average_jaccard")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ceiling", description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default="static_0,dynamic_0")
    ap.add_argument("--sigma", type=float, default=0.25, help="noise on the true tracks, px")
    ap.add_argument("--cache", default="bench_cache")
    ap.add_argument("--out", default="bench_out/ceiling")
    ap.add_argument("--gaps", default="1,2,4,8,16", help="frame gaps of the parallax slope")
    ap.add_argument("--slope-only", action="store_true",
                    help="only the parallax slope (no solves: seconds)")
    ap.add_argument("--from-query", action="store_true",
                    help="with --slope-only: the slope between each track's query frame and "
                         "the frames 1, 2, 3, 4-7, 8-15, 16-31, 32+ away from it")
    ap.add_argument("--plain", action="store_true",
                    help="only how the recorded outputs (worldtrack, dis, lk) do on plain vs "
                         "textured query pixels (no solves: seconds)")
    ap.add_argument("--error-split", action="store_true",
                    help="first solve on the tracker's tracks, on the truth at the tracker's "
                         "observations, and on its observations within --gross px of the truth")
    ap.add_argument("--gross", type=float, default=2.0,
                    help="--error-split: observations farther than this from the truth (px) "
                         "count as gross errors")
    a = ap.parse_args(argv)
    from engine.trackfile import load_trackfile, save_trackfile

    cache = Path(a.cache).resolve()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for clip in [c.strip() for c in a.clips.split(",") if c.strip()]:
        gt_path = cache / "full" / clip / "gt.npz"
        rec = cache / "results" / "full" / clip / "worldtrack_track.npz"
        if not gt_path.is_file() or not rec.is_file():
            print(f"error: {clip}: run `python -m benchmarks.run --suite full` first "
                  f"(needs {gt_path} and {rec})", file=sys.stderr)
            return 2
        gt = load_trackfile(gt_path)
        frames = cache / "full" / clip / "frames"
        if a.plain:
            outs = {m: load_trackfile(cache / "results" / "full" / clip / f"{m}.npz")
                    for m in ("worldtrack", "dis", "lk")}
            rows[clip] = {"plain": plain_split(gt, frames, outs)}
            continue
        if a.error_split:
            rows[clip] = {"error_split": _error_split(gt, rec, frames, a.sigma, a.gross)}
            print(f"{clip}: done", file=sys.stderr)
            continue
        if a.from_query:
            rows[clip] = {"query_parallax_slope": {str(k): v for k, v in query_parallax_slope(
                gt, load_trackfile(rec)).items()}}
            continue
        gaps = tuple(int(g) for g in a.gaps.split(","))
        rows[clip] = {"parallax_slope": {str(k): v for k, v in
                                         parallax_slope(gt, load_trackfile(rec), gaps).items()}}
        if a.slope_only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            noisy = Path(tmp) / "truth_tracks.npz"
            save_trackfile(noisy, noisy_truth(gt, load_trackfile(rec, mmap=False), a.sigma))
            rows[clip].update({
                "worldtrack_tracks": solve_and_score(rec, Path(tmp) / "a.npz", frames, gt),
                "true_tracks_noisy": solve_and_score(noisy, Path(tmp) / "b.npz", frames, gt),
                "triangulation_apd_static_per_threshold": triangulation_apd(gt, a.sigma),
            })
        print(f"{clip}: done", file=sys.stderr)
    (out / "ceiling.json").write_text(json.dumps({"sigma_px": a.sigma, "clips": rows}, indent=1))
    if a.error_split:
        _print_split(rows, a.sigma, a.gross)
        return 0
    if a.from_query:
        keys = [str(b) for b in QUERY_GAP_BINS]
        print("| clip | " + " | ".join(f"{k}{'+' if k == keys[-1] else ''}" for k in keys)
              + " |\n|---|" + "---|" * len(keys))
        for clip, r in rows.items():
            print(f"| {clip} | " + " | ".join(f"{r['query_parallax_slope'][k]:.3f}"
                                             for k in keys) + " |")
        return 0
    if a.plain:
        print("| clip | plain queries | within 1 px, plain / textured: worldtrack | dis | lk |\n"
              "|---|---|---|---|---|")
        for clip, r in rows.items():
            p = r["plain"]
            print(f"| {clip} | {p['plain_fraction']:.2f} | " + " | ".join(
                f"{p[m]['plain_lt1px']:.2f} / {p[m]['textured_lt1px']:.2f}"
                for m in ("worldtrack", "dis", "lk")) + " |")
        return 0
    if not a.slope_only:
        _print_solves(rows, a.sigma)
    print("\nParallax slope of Worldtrack's raw tracks (1 = keeps the true parallax):\n")
    for clip, r in rows.items():
        print(f"- {clip}: " + ", ".join(f"gap {k}: {v:.3f}" for k, v in r["parallax_slope"].items()))
    return 0


SPLIT_INPUTS = ("worldtrack_tracks", "truth_at_tracker_visibility", "small_errors_only")


def _error_split(gt, rec: Path, frames: Path, sigma: float, gross: float) -> dict:
    """First-solve scores (focal error, ATE) of the three inputs of ``--error-split`` made from
    the recorded track file ``rec``, and how many observations each keeps."""
    from engine.trackfile import load_trackfile, save_trackfile

    data = load_trackfile(rec, mmap=False)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, d in zip(SPLIT_INPUTS, (data, truth_at_tracker_visibility(gt, data, sigma),
                                          small_errors_only(gt, data, gross))):
            path = rec
            if d is not data:
                path = Path(tmp) / f"{name}.npz"
                save_trackfile(path, d)
            s = solve_and_score(path, Path(tmp) / f"{name}_solved.npz", frames, gt, refine=False)
            s["observations"] = int(np.asarray(d.visible).sum())
            out[name] = s
    return out


def _print_split(rows: dict, sigma: float, gross: float) -> None:
    labels = ("Worldtrack's", f"truth + {sigma} px at its truly visible observations",
              f"its observations within {gross:g} px of the truth")
    print("| clip | first solve on | observations | focal err % | ATE % path |\n|---|---|---|---|---|")
    for clip, r in rows.items():
        for name, label in zip(SPLIT_INPUTS, labels):
            s = r["error_split"][name]
            if "error" in s:
                print(f"| {clip} | {label} | {s['observations']} | solve failed: {s['error']} | |")
                continue
            print(f"| {clip} | {label} | {s['observations']} | "
                  f"{100 * s['cam.focal_err_median']:.2f} | {s['cam.ate_pct']:.3f} |")


def _print_solves(rows: dict, sigma: float) -> None:
    print(f"| clip | tracks | focal err % | ATE % path | APD static | AJ |\n|---|---|---|---|---|---|")
    for clip, r in rows.items():
        for name, key in (("Worldtrack's", "worldtrack_tracks"),
                          (f"true + {sigma} px noise", "true_tracks_noisy")):
            s = r[key]
            if "error" in s:
                print(f"| {clip} | {name} | solve failed: {s['error']} | | | |")
                continue
            print(f"| {clip} | {name} | {100 * s['cam.focal_err_median']:.2f} | "
                  f"{s['cam.ate_pct']:.3f} | {s['3d.apd3d_static']:.3f} | "
                  f"{s['2d.average_jaccard']:.3f} |")
        tri = r["triangulation_apd_static_per_threshold"]
        print(f"| {clip} | true cameras, triangulated | – | – | {np.mean(tri):.3f} "
              f"(δ=1: {tri[0]:.3f}) | – |")


if __name__ == "__main__":
    sys.exit(main())
