"""Refine stage: feed the solved geometry back into the 2D tracks (track -> solve -> refine).

Python API (used by :func:`engine.solve.solve_trackfile`, on by default)::

    from engine.refine import refine_solution, find_footage
    footage, note = find_footage(metadata, trackfile_path, clip=None)   # None if missing
    c2w, K, report = refine_solution(data, writer, c2w, K, report, footage, solve_fn)

Rounds: after the first solve, every track is re-fitted against the cameras (:mod:`.tracks`);
the tracker observations that agree with the geometry (outlier frames dropped) are solved again,
and this repeats while the number of agreeing observations grows (at most ``MAX_ROUNDS``
re-solves); the best round's cameras are kept. The final pass writes the refined 2D tracks,
visibility (geometry + appearance from the footage via the ONNX kernels), confidence,
``tracks_3d`` / ``group`` / ``reproj_error``. ``metadata["solve"]["refine"]`` records every
round. See :mod:`.tracks` for what "refined" means per track.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["refine_solution", "find_footage", "MAX_ROUNDS"]

MAX_ROUNDS = 2          # re-solves after the first solve
MIN_GAIN = 0.01         # relative growth of agreeing observations that counts as improvement
WORK_MAX_SIDE = 640     # appearance descriptors are computed at this working resolution


def find_footage(metadata: dict, trackfile_path, clip=None, max_side: int = WORK_MAX_SIDE):
    """Open the clip a track file was made from: ``clip`` if given, else
    ``metadata["source"]["path"]`` as is or relative to the track file's folder.

    Returns (Footage or None, note). None when it is missing, unreadable or does not match the
    track file's size / frame count (then the refinement uses geometry only).
    """
    from ..decode import DecodeError, open_footage

    src = (metadata.get("source") or {}).get("path") if clip is None else str(clip)
    if not src:
        return None, "no footage path in the track file (give --clip)"
    cands = [Path(src)]
    if clip is None and not Path(src).is_absolute():
        cands.append(Path(trackfile_path).resolve().parent / src)
    fr = metadata.get("frame_range")
    for p in cands:
        try:
            fo = open_footage(p, frames=tuple(fr) if fr else None, max_side=max_side)
        except DecodeError:
            continue
        W, H = metadata["image_size"]
        if tuple(fo.input_size) != (int(W), int(H)):
            return None, (f"footage {p} is {fo.input_size[0]}x{fo.input_size[1]}, the track file "
                          f"{W}x{H}: geometry only")
        return fo, f"footage {p}"
    return None, f"footage not found ({src}): visibility from geometry only"


def refine_solution(data, out, c2w: np.ndarray, K: np.ndarray, report: dict, footage,
                    solve_fn: Callable, max_rounds: int = MAX_ROUNDS, progress=None
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Iterate solve -> refine and write the refined tracks into ``out``.

    ``data``: the tracker's :class:`~engine.trackfile.TrackData` (2D input, never modified);
    ``out``: a mapping of writable arrays (a ``TrackFileWriter``) whose ``tracks_3d``, ``group``
    and ``reproj_error`` hold the first solve's lift, and whose ``tracks_2d`` / ``visible`` /
    ``confidence`` receive the refined tracks; ``c2w``, ``K``, ``report`` the first solve's result;
    ``solve_fn(visible, out3d, out_group, out_reproj) -> (c2w, K, report)`` re-runs the solve
    (cameras + lift) on the tracker's 2D with another visibility. Returns the kept round's
    (c2w, K, report) with ``report["refine"]`` filled.
    """
    from .tracks import refine_tracks

    t0 = time.monotonic()
    N, T = data.n_tracks, data.n_frames
    best = {"c2w": c2w, "K": K, "report": report,
            "lift": (np.array(out["tracks_3d"]), np.array(out["group"]),
                     np.array(out["reproj_error"]))}
    # geometry-only passes write into scratch arrays (the final pass writes ``out``)
    scratch = {"tracks_2d": np.empty((N, T, 2), np.float32), "visible": np.empty((N, T), bool),
               "confidence": np.empty((N, T), np.float32),
               "tracks_3d": np.empty((N, T, 3), np.float32), "group": np.empty(N, np.int32),
               "reproj_error": np.empty(N, np.float32)}

    def geometry_pass(sol):
        lift3d, grp, rep = sol["lift"]
        r = sol["report"]
        return refine_tracks(data.tracks_2d, data.visible, data.confidence, data.query, lift3d,
                             grp, rep, sol["c2w"], sol["K"], _dist(r), r["mode"],
                             r.get("noise_sigma_px", 1.0), data.image_size, _rigid_ids(r),
                             scratch["tracks_2d"], scratch["visible"], scratch["confidence"],
                             scratch["tracks_3d"], scratch["group"], scratch["reproj_error"],
                             footage=None, progress=progress)

    res = geometry_pass(best)
    rounds = [_round_entry(0, best["report"], res, True)]
    for r_i in range(1, max_rounds + 1):
        if progress is not None:
            progress.check()
        o3 = np.empty((N, T, 3), np.float32)
        og = np.empty(N, np.int32)
        orr = np.empty(N, np.float32)
        try:
            c2w_n, K_n, rep_n = solve_fn(res.clean_visible, o3, og, orr)
        except Exception as e:   # SolveError on the cleaned tracks: keep what we have
            if type(e).__name__ == "Cancelled":
                raise
            rounds.append({"round": r_i, "accepted": False, "error": str(e)})
            break
        cand = {"c2w": c2w_n, "K": K_n, "report": rep_n, "lift": (o3, og, orr)}
        res_n = geometry_pass(cand)
        gain = res_n.report["agreeing_observations"] / max(1, res.report["agreeing_observations"])
        ok = gain > 1 + MIN_GAIN
        rounds.append(_round_entry(r_i, rep_n, res_n, ok))
        if not ok:
            break
        best, res = cand, res_n
    # final pass: best cameras, appearance visibility, written to the output
    lift3d, grp, rep = best["lift"]
    r = best["report"]
    final = refine_tracks(data.tracks_2d, data.visible, data.confidence, data.query, lift3d, grp,
                          rep, best["c2w"], best["K"], _dist(r), r["mode"],
                          r.get("noise_sigma_px", 1.0), data.image_size, _rigid_ids(r),
                          out["tracks_2d"], out["visible"], out["confidence"], out["tracks_3d"],
                          out["group"], out["reproj_error"], footage=footage, progress=progress)
    report = best["report"]
    report["refine"] = {"rounds": rounds, "kept_round": max(e["round"] for e in rounds
                                                            if e.get("accepted")),
                        "final": final.report, "seconds": round(time.monotonic() - t0, 3)}
    return best["c2w"], best["K"], report


def _round_entry(i: int, rep: dict, res, accepted: bool) -> dict:
    return {"round": i, "accepted": accepted, "reproj_median_px": rep.get("reproj_median_px"),
            "focal_px": rep.get("focal_px"), "n_static": res.report["n_static"],
            "n_rigid": res.report["n_rigid"],
            "agreeing_observations": res.report["agreeing_observations"]}


def _dist(report: dict):
    d = report.get("distortion")
    return (d.get("k1", 0.0), d.get("k2", 0.0), d.get("k3", 0.0)) if d else None


def _rigid_ids(report: dict) -> set[int]:
    return {int(g["id"]) for g in report.get("lift", {}).get("groups", []) if g["kind"] == "rigid"}
