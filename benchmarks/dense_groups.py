"""Does the solve find the moving objects of dense footage? Rigid groups scored on every track.

    python -m benchmarks.dense_groups --clip bench_cache/full/dynamic_0 --out bench_out/dense_groups

The clip (a generated benchmark clip: ``frames/`` and ``gt.npz`` with depth maps) is tracked
densely (`engine track --device cpu`, every working pixel) and solved with the defaults
(`engine solve --clip`), both as child processes; their files are reused when present
(``--retrack`` / ``--resolve`` make them again).

Each dense track is labelled by the ground truth's geometry (:func:`label_tracks`): its query
pixel is lifted to 3D with the true depth and camera, moved by the static scene (no motion) and
by each moving object's true rigid motion (Procrustes on the object's ground-truth tracks), and
projected through the true cameras; the label is the model whose median distance to the
tracker's 2D over the track's visible frames is smallest, if under ``--tol`` px. Tracks no model
explains within that are the tracker's gross errors ("unexplained").

Reported (markdown, and ``dense_groups.json`` under ``--out``): per ground-truth object, its
labelled tracks, the share of them in a rigid group and in the group holding most of them; per
rigid group, its size, the labels of its tracks, and its rotation rate (median angle per frame
of its tracks' world positions, Procrustes between frames t-4 and t) and the true object whose
rate is closest, if within 25 % of it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .metrics import run_measured
from .solve_cost import _track

#: frames between the two Procrustes fits of a rotation rate
RATE_GAP = 4
#: a group's rotation rate matches a true object's within this fraction of the object's
RATE_MATCH = 0.25


def object_motions(tracks_3d: np.ndarray, group: np.ndarray) -> dict[int, tuple[np.ndarray,
                                                                                  np.ndarray]]:
    """Each ground-truth object's world motion from its first frame: ``{o: (R (T, 3, 3),
    t (T, 3))}`` with ``X_t = R_t X_0 + t_t`` (world units), fitted (Procrustes) to its tracks'
    true 3D positions ``tracks_3d`` (N, T, 3); objects with fewer than 3 tracks are left out."""
    out = {}
    for o in np.unique(group[group >= 0]):
        P = tracks_3d[group == o].astype(np.float64)
        if len(P) < 3:
            continue
        Rs, ts = [], []
        for t in range(P.shape[1]):
            R = _procrustes(P[:, 0], P[:, t])
            Rs.append(R)
            ts.append(P[:, t].mean(0) - R @ P[:, 0].mean(0))
        out[int(o)] = (np.array(Rs), np.array(ts))
    return out


def _procrustes(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Rotation R (3, 3) that best maps centred points A onto centred points B."""
    a = A - A.mean(0)
    b = B - B.mean(0)
    U, _, Vt = np.linalg.svd(b.T @ a)
    return U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt


def _project(X: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (n, T, 2) of world points X (n, T, 3) through cameras c2w (T, 4, 4), K (T, 3, 3)."""
    xc = np.einsum("tji,ntj->nti", c2w[:, :3, :3], X - c2w[None, :, :3, 3])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([xc[..., 0] / xc[..., 2] * K[None, :, 0, 0] + K[None, :, 0, 2],
                         xc[..., 1] / xc[..., 2] * K[None, :, 1, 1] + K[None, :, 1, 2]], -1)


def label_tracks(gt: dict, query: np.ndarray, tracks_2d: np.ndarray, visible: np.ndarray,
                 tol: float = 3.0, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Label tracks by the ground truth's geometry (see the module docstring).

    ``gt``: ``cam_to_world`` (T, 4, 4) OpenCV camera axes, ``K`` (T, 3, 3), ``depth`` (T, H, W)
    camera z, ``tracks_3d`` / ``group`` of its query tracks; ``query`` (N, 3) (frame, x, y) px,
    ``tracks_2d`` (N, T, 2) px, ``visible`` (N, T). Returns (label (N,): -1 static, o for
    object o, -99 where no model is within ``tol`` px; the best model's median error (N,) px,
    inf where none applies)."""
    c2w = np.asarray(gt["cam_to_world"], np.float64)
    K = np.asarray(gt["K"], np.float64)
    D = np.asarray(gt["depth"])
    motions = object_motions(np.asarray(gt["tracks_3d"]), np.asarray(gt["group"]))
    N = len(query)
    H, W = D.shape[1:]
    label = np.full(N, -99, int)
    best = np.full(N, np.inf)
    for s in range(0, N, chunk):
        q = np.asarray(query[s:s + chunk], np.float64)
        xy = np.asarray(tracks_2d[s:s + chunk], np.float64)
        vis = np.asarray(visible[s:s + chunk]).astype(bool)
        tq = np.clip(np.round(q[:, 0]).astype(int), 0, len(c2w) - 1)
        z = D[tq, np.clip(np.round(q[:, 2]).astype(int), 0, H - 1),
              np.clip(np.round(q[:, 1]).astype(int), 0, W - 1)].astype(np.float64)
        Kq = K[tq]
        xc = np.stack([(q[:, 1] - Kq[:, 0, 2]) / Kq[:, 0, 0] * z,
                       (q[:, 2] - Kq[:, 1, 2]) / Kq[:, 1, 1] * z, z], 1)
        Xw = np.einsum("nij,nj->ni", c2w[tq, :3, :3], xc) + c2w[tq, :3, 3]
        T = vis.shape[1]
        models = {-1: np.repeat(Xw[:, None], T, 1)}
        for o, (R, t) in motions.items():
            X0 = np.einsum("nji,nj->ni", R[tq], Xw - t[tq])
            models[o] = np.einsum("tij,nj->nti", R, X0) + t[None]
        for o, Xt in models.items():
            e = np.linalg.norm(_project(Xt, c2w, K) - xy, axis=2)
            e = np.where(vis & np.isfinite(e), e, np.nan)
            seen = vis.any(1) & np.isfinite(z)
            med = np.full(len(q), np.inf)
            with np.errstate(all="ignore"):
                med[seen] = np.nanmedian(e[seen], axis=1)
            med = np.where(np.isfinite(med), med, np.inf)
            better = med < best[s:s + chunk]
            best[s:s + chunk][better] = med[better]
            label[s:s + chunk][better] = o
    label[~(best < tol)] = -99
    return label, best


def rotation_rate(X: np.ndarray, gap: int = RATE_GAP) -> float:
    """Median rotation (degrees per frame) of a rigid point set X (n, T, 3) between frames
    ``gap`` apart (NaN rows dropped; NaN with fewer than 3 points or frames)."""
    from scipy.spatial.transform import Rotation

    X = X[np.isfinite(X).all(axis=(1, 2))]
    T = X.shape[1]
    if len(X) < 3 or T <= gap:
        return float("nan")
    ang = [Rotation.from_matrix(_procrustes(X[:, t - gap], X[:, t])).magnitude()
           for t in range(gap, T)]
    return float(np.degrees(np.median(ang)) / gap)


def score(gt: dict, query, tracks_2d, visible, group: np.ndarray, tracks_3d, groups: list[dict],
          tol: float = 3.0) -> dict:
    """Scores of one solved dense file: ``query`` / ``tracks_2d`` / ``visible`` the tracker's
    (the labels are of its 2D), ``group`` (N,), ``tracks_3d`` (N, T, 3) and ``groups`` (the
    report's ``lift.groups``) the solve's."""
    label, _ = label_tracks(gt, query, tracks_2d, visible, tol)
    kinds = {int(g["id"]): g["kind"] for g in groups}
    rigid_ids = sorted(k for k, v in kinds.items() if v == "rigid")
    in_rigid = np.isin(group, rigid_ids)
    motions = object_motions(np.asarray(gt["tracks_3d"]), np.asarray(gt["group"]))
    true_rate = {o: rotation_rate(np.einsum("tij,nj->nti", R, np.asarray(gt["tracks_3d"])[
        np.asarray(gt["group"]) == o, 0].astype(np.float64)) + t[None]) for o, (R, t)
        in motions.items()}
    objects = []
    for o in sorted(motions):
        m = label == o
        n = int(m.sum())
        top = None
        if n and in_rigid[m].any():
            gid, cnt = np.unique(group[m & in_rigid], return_counts=True)
            top = (int(gid[np.argmax(cnt)]), int(cnt.max()))
        objects.append({"object": o, "tracks": n,
                        "in_rigid": round(float(in_rigid[m].mean()), 4) if n else None,
                        "main_group": None if top is None else top[0],
                        "in_main_group": round(top[1] / n, 4) if top else 0.0,
                        "true_rate_deg": round(true_rate[o], 2)})
    out_groups = []
    for k in rigid_ids:
        m = group == k
        labs, cnt = np.unique(label[m], return_counts=True)
        rate = rotation_rate(np.asarray(tracks_3d[np.flatnonzero(m)[:500]], np.float64))
        near = min(true_rate, key=lambda o: abs(true_rate[o] - rate)) if true_rate and \
            np.isfinite(rate) else None
        if near is not None and abs(true_rate[near] - rate) > RATE_MATCH * true_rate[near]:
            near = None
        out_groups.append({"group": k, "tracks": int(m.sum()),
                           "labels": {("unexplained" if a == -99 else "static" if a == -1
                                       else f"object {a}"): int(c) for a, c in zip(labs, cnt)},
                           "rate_deg": round(rate, 2), "closest_object": near})
    return {"tol_px": tol, "labels": {("unexplained" if a == -99 else "static" if a == -1
                                       else f"object {a}"): int(c)
                                      for a, c in zip(*np.unique(label, return_counts=True))},
            "objects": objects, "groups": out_groups}


def table(res: dict) -> str:
    lines = ["| true object | its tracks | in a rigid group | in its main group (id) | "
             "turns °/frame |", "|---|---|---|---|---|"]
    for o in res["objects"]:
        lines.append(f"| {o['object']} | {o['tracks']:,} | {o['in_rigid'] or 0:.1%} | "
                     f"{o['in_main_group']:.1%} ({'–' if o['main_group'] is None else o['main_group']})"
                     f" | {o['true_rate_deg']:.2f} |")
    lines += ["", "| rigid group | tracks | by label | turns °/frame (closest true object) |",
              "|---|---|---|---|"]
    for g in res["groups"]:
        labs = ", ".join(f"{k} {v:,}" for k, v in sorted(g["labels"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {g['group']} | {g['tracks']:,} | {labs} | {g['rate_deg']:.2f} "
                     f"({'–' if g['closest_object'] is None else g['closest_object']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dense_groups", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, type=Path,
                    help="a generated clip's folder (frames/ and gt.npz with depth)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tol", type=float, default=3.0, help="label tolerance, px (default 3)")
    ap.add_argument("--retrack", action="store_true")
    ap.add_argument("--resolve", action="store_true")
    a = ap.parse_args(argv)
    from engine.trackfile import load_trackfile

    gt_path = a.clip / "gt.npz"
    if not gt_path.exists():
        print(f"error: {gt_path} not found (a generated benchmark clip is needed)", file=sys.stderr)
        return 2
    gt = dict(np.load(gt_path, allow_pickle=False))
    if "depth" not in gt:
        print(f"error: {gt_path} has no depth maps (generate the clip with depth)", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    T = gt["cam_to_world"].shape[0]
    tracks = _track(a.clip / "frames", T, a.out, a.retrack)
    solved = a.out / f"solved_{T}f.npz"
    if a.resolve or a.retrack or not solved.exists():
        cost = run_measured([sys.executable, "-m", "engine", "solve", str(tracks), "--out",
                             str(solved), "--clip", str(a.clip / "frames"), "--progress",
                             "quiet"], log_path=str(a.out / "solve.log"))
        if cost.returncode != 0:
            print(f"error: engine solve failed (exit {cost.returncode}): see "
                  f"{a.out / 'solve.log'}", file=sys.stderr)
            return 3
    d = load_trackfile(tracks)
    s = load_trackfile(solved)
    res = score(gt, d.query, d.tracks_2d, d.visible, np.asarray(s.group), s.tracks_3d,
                s.metadata["solve"]["lift"]["groups"], a.tol)
    res["lift"] = {k: v for k, v in s.metadata["solve"]["lift"].items()
                   if k in ("group_sample", "static_bodies_skipped", "dissolved_groups")}
    res["clip"] = str(a.clip)
    (a.out / "dense_groups.json").write_text(json.dumps(res, indent=1))
    print(f"{a.clip}: {d.n_tracks:,} dense tracks; labels {res['labels']}")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
