"""Where a method's 2D AJ is lost: the AJ each class of tracks would add if it were perfect.

``python -m benchmarks.breakdown --clips static_0,dynamic_0`` reads a recorded benchmark output
(``bench_cache/results/full/<clip>/worldtrack.npz``, written by ``benchmarks.run``) and the clip's
truth (``bench_cache/full/<clip>/gt.npz`` and its frames) and splits the tracks into four classes:
truly static or moving (the truth's ``group``) x plain or textured query pixel (grey contrast of
the 7x7 box at the query pixel at or below ``PLAIN_STD``, the measure the refinement uses,
:func:`engine.refine.appearance.query_texture`). For each class it reports the class's own AJ and
**the gain if perfect**: the clip's AJ with that class's positions and visibility replaced by the
truth, minus the clip's AJ as recorded (TAP-Vid 'first' queries, 256x256 scaling, as the harness
scores). The gains of the classes need not add up to the gap to 1 (AJ is a ratio of counts).

For the truly static tracks it also gives the depth error at the query frame: the median of
``|log(z_pred / (s z_true))|`` over the class, ``s`` the median ratio over all static tracks (the
monocular scale), and the fraction over 10 %. A static track drifts in 2D only through a wrong
depth when the camera is right (issue 5's tables say it is, to 0.1-2 % focal).

Markdown table on stdout, ``--out`` JSON with the same numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from engine.refine.tracks import ANCHOR_MIN_TEXTURE as PLAIN_STD  # grey std, 0..1, 7x7 box

from . import metrics as M

ROOT = Path(__file__).resolve().parents[1]


def aj(gt: dict, tracks: np.ndarray, visible: np.ndarray, image_size: tuple[int, int],
       rows: np.ndarray | None = None) -> float:
    """TAP-Vid AJ ('first' queries, scaled to 256x256) of ``tracks`` (N, T, 2) px /
    ``visible`` (N, T) against ``gt`` (``query``, ``tracks_2d``, ``visible``), on ``rows``."""
    rows = np.ones(len(tracks), bool) if rows is None else rows
    r = M.tapvid_metrics(np.round(gt["query"][rows, 0]).astype(int),
                         ~np.asarray(gt["visible"][rows], bool), gt["tracks_2d"][rows],
                         ~np.asarray(visible[rows], bool), tracks[rows], image_size=image_size)
    return float(r["average_jaccard"])


def gain_if_perfect(gt: dict, tracks: np.ndarray, visible: np.ndarray,
                    image_size: tuple[int, int], rows: np.ndarray,
                    base: float | None = None) -> float:
    """AJ gained when the tracks in ``rows`` (N,) bool take the truth's positions and visibility;
    ``base``: the AJ of ``tracks`` as given, when already computed."""
    tr, vis = tracks.copy(), np.asarray(visible, bool).copy()
    tr[rows] = gt["tracks_2d"][rows]
    vis[rows] = np.asarray(gt["visible"][rows], bool)
    if base is None:
        base = aj(gt, tracks, visible, image_size)
    return aj(gt, tr, vis, image_size) - base


def query_depths(d: dict) -> np.ndarray:
    """(N,) depth (camera z, OpenCV axes) of each track's 3D point at its query frame."""
    q = np.asarray(d["query"], np.float64)
    t = np.clip(np.round(q[:, 0]).astype(int), 0, len(d["cam_to_world"]) - 1)
    X = np.asarray(d["tracks_3d"], np.float64)[np.arange(len(q)), t]
    c2w = np.asarray(d["cam_to_world"], np.float64)[t]
    return np.einsum("nji,nj->ni", c2w[:, :3, :3], X - c2w[:, :3, 3])[:, 2]


def depth_errors(gt: dict, pred: dict, static: np.ndarray) -> np.ndarray:
    """(N,) |log| depth ratio at the query frame after the static tracks' median scale (NaN
    where either depth is missing or not positive)."""
    zg, zp = query_depths(gt), query_depths(pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = zp / zg
        ok = static & np.isfinite(r) & (r > 0)
        if not ok.any():
            return np.full(len(r), np.nan)
        return np.abs(np.log(r / np.median(r[ok])))


def breakdown(gt: dict, pred: dict, plain: np.ndarray, image_size: tuple[int, int]) -> dict:
    """The per-class numbers of one clip (see the module docstring); ``plain`` (N,) bool."""
    tracks = np.asarray(pred["tracks_2d"], np.float64)
    visible = np.asarray(pred["visible"], bool)
    static = np.asarray(gt["group"]) < 0
    derr = depth_errors(gt, pred, static) if "tracks_3d" in pred else None
    base = aj(gt, tracks, visible, image_size)
    out = {"aj": round(base, 4), "classes": {}}
    for name, rows in (("static plain", static & plain), ("static textured", static & ~plain),
                       ("moving plain", ~static & plain), ("moving textured", ~static & ~plain)):
        if not rows.any():
            continue
        c = {"n": int(rows.sum()), "aj": round(aj(gt, tracks, visible, image_size, rows), 4),
             "gain_if_perfect": round(gain_if_perfect(gt, tracks, visible, image_size, rows,
                                                      base), 4)}
        if derr is not None and name.startswith("static"):
            e = derr[rows]
            e = e[np.isfinite(e)]
            if len(e):
                c["depth_err_median"] = round(float(np.median(e)), 4)
                c["depth_err_over_10pct"] = round(float((e > np.log(1.1)).mean()), 4)
        out["classes"][name] = c
    return out


def plain_queries(frames_dir: Path, query: np.ndarray, n_frames: int,
                  max_std: float = PLAIN_STD) -> np.ndarray:
    """(N,) bool: query pixel plain (grey contrast of the 7x7 box in its query frame at or below
    ``max_std``, by default the refinement's ``PLAIN_STD``) in the footage."""
    from engine.decode import open_footage
    from engine.refine.appearance import query_texture

    tex = query_texture(open_footage(frames_dir), np.asarray(query, np.float32), n_frames)
    return ~(tex > max_std)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.breakdown",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--clips", required=True,
                    help="comma-separated cached clips, e.g. static_0,dynamic_0")
    ap.add_argument("--method", default="worldtrack",
                    help="recorded output <method>.npz (default worldtrack)")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench_cache" / "full")
    ap.add_argument("--results", type=Path, default=ROOT / "bench_cache" / "results" / "full")
    ap.add_argument("--out", type=Path, help="JSON file for the numbers")
    args = ap.parse_args(argv)
    res = {}
    for clip in [c for c in args.clips.split(",") if c]:
        gpath, ppath = args.cache / clip / "gt.npz", args.results / clip / f"{args.method}.npz"
        if not gpath.exists() or not ppath.exists():
            missing = gpath if not gpath.exists() else ppath
            print(f"{clip}: missing {missing} (run benchmarks.run first)", file=sys.stderr)
            return 2
        gt = dict(np.load(gpath, allow_pickle=True))
        pred = dict(np.load(ppath, allow_pickle=True))
        T = gt["visible"].shape[1]
        st = json.loads((args.cache / clip / "settings.json").read_text())
        plain = plain_queries(args.cache / clip / "frames", gt["query"], T)
        res[clip] = breakdown(gt, pred, plain, (int(st["width"]), int(st["height"])))
    print("| clip | AJ | class | n | class AJ | gain if perfect | depth err median | depth err > 10 % |")
    print("|---|---|---|---|---|---|---|---|")
    for clip, r in res.items():
        for name, c in r["classes"].items():
            de, over = c.get("depth_err_median"), c.get("depth_err_over_10pct")
            print(f"| {clip} | {r['aj']:.3f} | {name} | {c['n']} | {c['aj']:.3f} | "
                  f"{c['gain_if_perfect']:+.3f} | {'' if de is None else format(de, '.3f')} | "
                  f"{'' if over is None else format(over, '.2f')} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
