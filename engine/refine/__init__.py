"""Refine stage: feed the solved geometry back into the 2D tracks (track -> solve -> refine).

Python API (used by :func:`engine.solve.solve_trackfile`, on by default)::

    from engine.refine import refine_solution, find_footage
    footage, note = find_footage(metadata, trackfile_path, clip=None)   # None if missing
    c2w, K, report = refine_solution(data, writer, c2w, K, report, footage, solve_fn,
                                     lift=lift)      # solve_fn / lift: engine.solve.solve_world

Rounds: after the first solve, every track is re-fitted against the cameras (:mod:`.tracks`);
the tracker observations that agree with the geometry (outlier frames dropped) are solved again,
and this repeats while a re-solve improves (:func:`_improves`: more agreeing observations, or
as many, up to a tie, and a better pinned focal; at most ``MAX_ROUNDS`` re-solves); the best round's
cameras are kept. A first solve that pins its focal
(``RESOLVE_SKIP_SIGMA``) is not solved again (the round-1 entry's ``skipped`` says why), nor
is an accepted re-solve that pins it so. Each
round's entry records how many of the tracker's visible observations its pass dropped
(``dropped_observations``). With more than
``EVAL_MAX_TRACKS`` tracks (dense input) a re-solve is judged on a fixed, evenly spaced sample
of them: the observations that agree with the sample's static fits, the kept solution's and
the candidate's (the round's ``sample`` entry); only an accepted one is lifted and fitted in
full. The final pass
starts from the kept round's geometry pass (copied, not fitted again) and writes the refined
2D tracks, visibility (geometry + appearance from the footage via the ONNX kernels), confidence,
``tracks_3d`` / ``group`` / ``reproj_error``. ``metadata["solve"]["refine"]`` records every
round. See :mod:`.tracks` for what "refined" means per track.

The lifts it works from leave work that its own fits make moot (:func:`needs_paths`: not in
tripod mode): the moving tracks are fitted to the rigid groups by a round's geometry pass, only
those it does not fit as static points (the lift report's group ``n_tracks`` then count those),
and the non-rigid paths are made at the end for the tracks left to the tracker
(:func:`_fill_paths`); the outputs are the same as from full lifts. On a dense static clip that
is most of the lift's work (72,000 moving tracks, almost all static points again).

Memory: ``memory_limit_mb`` (default: the process-wide limit that ``python -m engine solve
--memory-limit`` sets, :func:`engine.track.memory.set_process_limit`) sizes the chunks, moves
the per-track-and-frame work arrays to disk memory maps when they would not fit and releases
mapped pages after use; the result is the same with and without a limit up to the last bit of
a few float results (smaller chunks change the length of some vectorised operations).
:func:`check_memory_limit` fails early when the limit is below the minimum.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["refine_solution", "find_footage", "check_memory_limit", "refine_minimum_mb",
           "needs_paths", "MAX_ROUNDS", "RESOLVE_RUNS", "RESOLVE_SKIP_SIGMA", "EVAL_MAX_TRACKS",
           "eval_rows", "resolve_skipped"]

MAX_ROUNDS = 2          # re-solves after the first solve
MIN_GAIN = 0.01         # relative growth of agreeing observations that counts as improvement
#: ... or a re-solve that loses none of them and pins the focal better: its focal uncertainty
#: (``focal_sigma_rel``) below this fraction of the kept solution's (the margin by which a
#: restart of the solve replaces the kept run, engine.solve.pipeline.RESTART_SIGMA_MARGIN).
#: The demo clip: a re-solve with 0.45 % more agreeing observations, focal 1 sigma 2.76 -> ~0.5 %
#: and 7.2 -> 2.5 % focal error was rejected by the growth rule alone
RESOLVE_SIGMA_MARGIN = 0.75
#: ... where "none fewer" allows this fraction fewer: two solutions' counts of agreeing
#: observations differ by the static fits that flip at the inlier radius, so a difference this
#: small is a tie and the better pinned focal decides. The two re-solves it turned over came
#: nearer the true focal: the suite's zoom_1 (agreeing 29,641 -> 29,593, -0.16 %; 1 sigma
#: 2.68 -> 1.85 %; focal error 4.73 -> 2.02 %) and dense dynamic_0's sample (169,225 ->
#: 168,953, -0.16 %; 1 sigma 1.08 -> 0.70 %; focal error 1.99 -> 0.57 %).
RESOLVE_TIE = 0.005
#: runs of a self-calibrated re-solve (the first solve's restarts: SOLVE_RESTARTS)
RESOLVE_RUNS = 1
#: a self-calibrated first solve (one focal) that pins its focal within this fraction (1 sigma,
#: ``focal_sigma_rel``; the bound below which :func:`engine.solve.pipeline.solve_cameras` skips
#: its restarts) is not solved again: its re-solve on the cleaned tracks finds the same cameras.
#: Measured on the 15 benchmark clips and the dense static_0 file (a re-solve is kept when it
#: grows the agreeing observations by more than ``MIN_GAIN``): the 8 pinned solves' re-solves
#: grew them by -0.02 to +0.37 %, none kept; the 7 unpinned ones' by -0.92 to +0.69 % (of
#: those, deform_2's is kept for its better pinned focal, ``RESOLVE_SIGMA_MARGIN``; zoom_1's,
#: once kept, was unpinned too). On the dense file the skip saves the re-solve and its two
#: sample evaluations, ~11 s of ~70. An accepted re-solve that pins the focal so ends the
#: rounds too: deform_2's and dense dynamic_0's next re-solves were rejected (1 sigma 0.75 ->
#: 0.83 %, 0.70 -> 0.71 %).
RESOLVE_SKIP_SIGMA = 0.01
#: A re-solve of more tracks than this is judged on this many of them (evenly spaced rows).
EVAL_MAX_TRACKS = 16384
WORK_MAX_SIDE = 640     # appearance descriptors are computed at this working resolution
#: Refine bytes per pixel at its working resolution: ONNX ``features`` workspace, one frame's
#: descriptors, the decoded frame (measured ~120 B/px at 640x480 without the arena, rounded up).
REFINE_BYTES_PER_PX = 160


def _footage_colorspace(metadata: dict) -> str:
    """The colour space the tracker decoded the footage with (``auto`` when not recorded)."""
    from ..decode import COLORSPACES

    cs = ((metadata.get("engine") or {}).get("settings") or {}).get("colorspace", "auto")
    return cs if cs in COLORSPACES else "auto"


def refine_minimum_mb(image_size: tuple[int, int], max_side: int = WORK_MAX_SIDE,
                      decode_bytes: int = 0) -> int:
    """Least memory (MiB) the refine stage runs in for footage of ``image_size`` (W, H) px;
    ``decode_bytes``: peak of decoding one input frame (:attr:`engine.decode.Footage.
    decode_bytes`; frames are decoded while descriptors are computed)."""
    from ..decode import work_size_for
    from ..track.memory import BASE_MB, MIB, MIN_BLOCK_MB

    w, h = work_size_for(tuple(image_size), max_side)
    return int(np.ceil(BASE_MB + (REFINE_BYTES_PER_PX * w * h + decode_bytes) / MIB
                       + MIN_BLOCK_MB))


def check_memory_limit(limit_mb: int | None, trackfile_path, clip=None,
                       refine: bool = True) -> None:
    """Validate a memory limit for solving ``trackfile_path`` before any work: raise
    :class:`engine.track.memory.MemoryLimitError` when it is below what the refine stage needs
    (its appearance checks decode the footage, ``clip`` or the recorded source, and compute
    descriptors at up to ``WORK_MAX_SIDE`` px). The track file is only opened, not read."""
    from ..trackfile import load_trackfile
    from ..track.memory import MemoryBudget

    budget = MemoryBudget(limit_mb)     # validates the number
    if limit_mb is None or not refine:
        return
    data = load_trackfile(trackfile_path, check=False)
    footage, _ = find_footage(data.metadata, trackfile_path, clip)
    need = refine_minimum_mb(data.image_size,
                             decode_bytes=footage.decode_bytes if footage is not None else 0)
    budget.require(need, f"refining {data.image_size[0]}x{data.image_size[1]} footage",
                   "Raise the memory limit, or solve with --no-refine.")


def find_footage(metadata: dict, trackfile_path, clip=None, max_side: int = WORK_MAX_SIDE):
    """Open the clip a track file was made from: ``clip`` if given, else
    ``metadata["source"]["path"]`` as is or relative to the track file's folder.

    Returns (Footage or None, note). None when it is missing, unreadable or does not match the
    track file's size / frame count (then the refinement uses geometry only). The footage is
    decoded in the colour space the tracker used (``metadata["engine"]["settings"]
    ["colorspace"]``, ``auto`` when absent).
    """
    from ..decode import DecodeError, open_footage

    src = (metadata.get("source") or {}).get("path") if clip is None else str(clip)
    if not src:
        return None, "no footage path in the track file (give --clip)"
    cands = [Path(src)]
    if clip is None and not Path(src).is_absolute():
        cands.append(Path(trackfile_path).resolve().parent / src)
    fr = metadata.get("frame_range")
    cs = _footage_colorspace(metadata)
    for p in cands:
        try:
            fo = open_footage(p, frames=tuple(fr) if fr else None, max_side=max_side,
                              colorspace=cs)
        except DecodeError:
            continue
        W, H = metadata["image_size"]
        if tuple(fo.input_size) != (int(W), int(H)):
            return None, (f"footage {p} is {fo.input_size[0]}x{fo.input_size[1]}, the track file "
                          f"{W}x{H}: geometry only")
        return fo, f"footage {p}"
    return None, f"footage not found ({src}): visibility from geometry only"


def refine_solution(data, out, c2w: np.ndarray, K: np.ndarray, report: dict, footage,
                    solve_fn: Callable, max_rounds: int = MAX_ROUNDS, progress=None,
                    memory_limit_mb: int | None = None, lift: Callable | None = None
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Iterate solve -> refine and write the refined tracks into ``out``.

    ``data``: the tracker's :class:`~engine.trackfile.TrackData` (2D input, never modified);
    ``out``: a mapping of writable arrays (a ``TrackFileWriter``) whose ``tracks_3d``, ``group``
    and ``reproj_error`` hold the first solve's lift, and whose ``tracks_2d`` / ``visible`` /
    ``confidence`` receive the refined tracks; ``c2w``, ``K``, ``report`` the first solve's result;
    ``solve_fn(visible) -> (c2w, K, report, lift)`` re-runs the solve on the tracker's 2D with
    another visibility (:func:`engine.solve.solve_world`; ``lift(tracks_2d, visible, out3d,
    out_group, out_reproj) -> lift report`` lifts tracks through that solution). ``lift``: the
    first solve's; with it, a re-solve of more than ``EVAL_MAX_TRACKS`` tracks is judged on a
    fixed sample of them (:func:`eval_rows`; the round's ``sample`` entry) and lifted in full
    only when accepted. Returns the kept round's (c2w, K, report) with ``report["refine"]``
    filled. ``memory_limit_mb``: MiB, default the
    process-wide limit (None: unlimited); work arrays that do not fit it are memory maps of
    anonymous temporary files next to ``out.path`` (or in the system's temporary folder).
    """
    from ..solve import lift_into
    from ..track.memory import MIN_BLOCK_MB, MemoryBudget, make_kernels, process_limit
    from .tracks import refine_tracks

    t0 = time.monotonic()
    N, T = data.n_tracks, data.n_frames
    budget = MemoryBudget(process_limit() if memory_limit_mb is None else memory_limit_mb)
    if budget.limited:
        budget.fixed_mb = refine_minimum_mb(
            data.image_size, decode_bytes=footage.decode_bytes if footage is not None else 0
        ) - MIN_BLOCK_MB
    parent = Path(out.path).parent if getattr(out, "path", None) is not None else None
    work = parent if parent is not None and parent.is_dir() else None
    # arena-less ONNX sessions with a limit; the shared default sessions otherwise
    kernels = make_kernels("auto", None, budget) if budget.limited else None
    best = {"c2w": c2w, "K": K, "report": report, "lifter": lift, "lift_visible": data.visible,
            "lift": tuple(_copy(out[n], budget, work)
                          for n in ("tracks_3d", "group", "reproj_error"))}
    # geometry-only passes write into scratch arrays (the final pass writes ``out``); two sets,
    # so that the kept round's pass survives a rejected candidate's and the final pass copies
    # its fits instead of making them again

    def scratch_set():
        return tuple(budget.array(shape, dt, work) for shape, dt in (
            ((N, T, 2), np.float32), ((N, T), bool), ((N, T), np.float32),
            ((N, T, 3), np.float32), ((N,), np.int32), ((N,), np.float32)))

    spare = None
    # moving tracks are also fitted to the rigid groups robustly (outlier frames dropped) on
    # dense input, where a re-solve is judged on a sample's static fits; on sparse input the
    # full pass's agreement, the groups' included, judges it: there the robust fits turned the
    # demo clip's re-solve over (its group's tracks went 24 -> 0; focal error 2.5 -> 7.2 %)
    # and cost the suite's two clips with a group 0.0013 / 0.0006 AJ
    robust_groups = N > EVAL_MAX_TRACKS

    def geometry_pass(sol, dest):
        lift3d, grp, rep = sol["lift"]
        r = sol["report"]
        lifter, vis_l = sol.get("lifter"), sol["lift_visible"]
        assign = None if lifter is None or "group fits" not in _deferred(r) else \
            (lambda ids: lifter.assign(data.tracks_2d, vis_l, ids,
                                       query=data.query if robust_groups else None))
        res = refine_tracks(data.tracks_2d, data.visible, data.confidence, data.query,
                            lift3d, grp, rep, sol["c2w"], sol["K"], _dist(r), r["mode"],
                            r.get("noise_sigma_px", 1.0), data.image_size, _rigid_ids(r),
                            *dest, footage=None, progress=progress, budget=budget,
                            work_dir=work, assign=assign)
        if assign is not None:
            _count_members(r, res.outputs[4], res.outputs[5])
        return res

    res = geometry_pass(best, scratch_set())
    rounds = [_round_entry(0, best["report"], res, True,
                           _dropped(data.visible, res.clean_visible))]
    skip = resolve_skipped(best["report"]) if max_rounds > 0 else None
    if skip is not None:
        rounds.append({"round": 1, "accepted": False, "skipped": skip})
        max_rounds = 0
    # a re-solve is judged on a fixed sample of the tracks when there are many (dense input):
    # lifting and fitting every track of a candidate that is then rejected cost a dense
    # 48-frame clip a third of its solve; the sample's static fits stand for the whole set
    rows = eval_rows(N) if lift is not None and max_rounds > 0 else None
    sample = None
    if rows is not None:
        sample = _Sample(data, rows, budget, work, progress)
        ev_best = sample.evaluate(best["c2w"], best["K"], best["report"], lift, data.visible)
        rounds[0]["sample"] = ev_best
    for r_i in range(1, max_rounds + 1):
        if progress is not None:
            progress.check()
        try:
            c2w_n, K_n, rep_n, lift_n = solve_fn(res.clean_visible)
        except Exception as e:   # SolveError on the cleaned tracks: keep what we have
            if type(e).__name__ == "Cancelled":
                raise
            rounds.append({"round": r_i, "accepted": False, "error": str(e)})
            break
        if sample is not None:
            ev = sample.evaluate(c2w_n, K_n, rep_n, lift_n, res.clean_visible)
            ok = _improves(ev["agreeing_observations"], ev_best["agreeing_observations"],
                           rep_n, best["report"])
            if not ok:
                rounds.append({"round": r_i, "accepted": False,
                               "reproj_median_px": rep_n.get("reproj_median_px"),
                               "focal_px": rep_n.get("focal_px"),
                               "focal_sigma_rel": rep_n.get("focal_sigma_rel"),
                               "solve_runs": _runs(rep_n),
                               "sample": ev})
                break
        o3 = budget.array((N, T, 3), np.float32, work)
        og = budget.array((N,), np.int32, work)
        orr = budget.array((N,), np.float32, work)
        lift_into(rep_n, lift_n, data.tracks_2d, res.clean_visible, o3, og, orr,
                  paths=needs_paths(rep_n["mode"]), assign=needs_paths(rep_n["mode"]))
        cand = {"c2w": c2w_n, "K": K_n, "report": rep_n, "lifter": lift_n,
                "lift_visible": res.clean_visible, "lift": (o3, og, orr)}
        if spare is None:
            spare = scratch_set()
        res_n = geometry_pass(cand, spare)
        if sample is None:      # (with a sample, accepted above)
            ok = _improves(res_n.report["agreeing_observations"],
                           res.report["agreeing_observations"], rep_n, best["report"])
        rounds.append(_round_entry(r_i, rep_n, res_n, ok,
                                   _dropped(data.visible, res_n.clean_visible)))
        if sample is not None:
            rounds[-1]["sample"] = ev_best = ev
        if not ok:
            break
        spare = res.outputs             # the old best's scratch is free for the next candidate
        best, res = cand, res_n
        skip = resolve_skipped(rep_n, f"round {r_i}'s solve") if r_i < max_rounds else None
        if skip is not None:            # now pinned: a further re-solve finds these cameras
            rounds.append({"round": r_i + 1, "accepted": False, "skipped": skip})
            break
    # a rejected candidate's arrays are freed before the final pass
    spare = cand = res_n = o3 = og = orr = sample = None
    # final pass: best cameras, appearance visibility, written to the output
    lift3d, grp, rep = best["lift"]
    r = best["report"]
    final = refine_tracks(data.tracks_2d, data.visible, data.confidence, data.query, lift3d,
                          grp, rep, best["c2w"], best["K"], _dist(r), r["mode"],
                          r.get("noise_sigma_px", 1.0), data.image_size, _rigid_ids(r),
                          out["tracks_2d"], out["visible"], out["confidence"],
                          out["tracks_3d"], out["group"], out["reproj_error"],
                          footage=footage, kernels=kernels, progress=progress, budget=budget,
                          work_dir=work, occlusion=True, geometry=res)
    _fill_paths(best, final.kind, data.tracks_2d, out)
    _dissolve_small_groups(best, data, out, final)
    report = best["report"]
    report["refine"] = {"rounds": rounds, "kept_round": max(e["round"] for e in rounds
                                                            if e.get("accepted")),
                        "final": final.report, "seconds": round(time.monotonic() - t0, 3)}
    return best["c2w"], best["K"], report


def resolve_skipped(report: dict, solve: str = "the first solve") -> str | None:
    """Why the refinement does not solve again after the solve ``report`` (named ``solve`` in
    the reason), or None when it does (``RESOLVE_SKIP_SIGMA``: a self-calibrated single focal
    pinned that well; a known focal, a zoom or an unpinned focal is solved again)."""
    sig = report.get("focal_sigma_rel")
    if report.get("focal_given") or report.get("zoom") or sig is None \
            or not np.isfinite(sig) or sig >= RESOLVE_SKIP_SIGMA:
        return None
    return (f"no re-solve: {solve} pinned the focal within {100 * sig:.2f} % (1 sigma, "
            f"below {100 * RESOLVE_SKIP_SIGMA:g} %); the cleaned tracks would give the same "
            "cameras")


def eval_rows(n: int, max_tracks: int | None = None) -> np.ndarray | None:
    """The rows (sorted, evenly spaced over ``n`` tracks) a re-solve is judged on; None (all
    of them) when there are at most ``max_tracks`` (default ``EVAL_MAX_TRACKS``)."""
    max_tracks = EVAL_MAX_TRACKS if max_tracks is None else int(max_tracks)
    if n <= max_tracks:
        return None
    return np.unique(np.linspace(0, n - 1, max_tracks).round().astype(np.int64))


class _Sample:
    """A fixed sample of the tracker's tracks (``rows``), gathered once, on which a solution is
    judged: its lift (static and non-rigid, no rigid groups) and geometry pass on those tracks
    alone, scored by the observations that agree with the static fits. (Rigid groups are left
    out: finding them costs seconds whatever the number of tracks, and the static background
    is what a camera re-solve changes.)"""

    def __init__(self, data, rows: np.ndarray, budget, work, progress=None):
        T = data.n_frames
        self.rows, self.budget, self.work, self.progress = rows, budget, work, progress
        self.image_size = data.image_size
        self.ins = tuple(np.asarray(a[rows]) for a in (data.tracks_2d, data.visible,
                                                       data.confidence, data.query))
        n = len(rows)
        self.lifted = tuple(budget.array(shape, dt, work) for shape, dt in (
            ((n, T, 3), np.float32), ((n,), np.int32), ((n,), np.float32)))
        self.scratch = tuple(budget.array(shape, dt, work) for shape, dt in (
            ((n, T, 2), np.float32), ((n, T), bool), ((n, T), np.float32),
            ((n, T, 3), np.float32), ((n,), np.int32), ((n,), np.float32)))

    def evaluate(self, c2w, K, report: dict, lift: Callable, visible) -> dict:
        """Lift the sample through a solution (``lift`` with the sample's rows of ``visible``,
        the visibility that solution was solved from) and fit it as the geometry pass does;
        returns the sample's entry for the round report."""
        from .tracks import refine_tracks

        t0 = time.monotonic()
        xy, vis, conf, query = self.ins
        rep = dict(report)
        rep["lift"] = lift(xy, np.asarray(visible[self.rows]), *self.lifted, rigid=False,
                           paths=needs_paths(rep["mode"]))
        res = refine_tracks(xy, vis, conf, query, *self.lifted, c2w, K, _dist(rep), rep["mode"],
                            rep.get("noise_sigma_px", 1.0), self.image_size, _rigid_ids(rep),
                            *self.scratch, footage=None, progress=self.progress,
                            budget=self.budget, work_dir=self.work)
        return {"tracks": int(len(self.rows)),
                "agreeing_observations": res.report["agreeing_observations"],
                "n_static": res.report["n_static"],
                "seconds": round(time.monotonic() - t0, 3)}


def _deferred(report: dict) -> list[str]:
    """What a solution's lift left to the refinement (its report's ``deferred``)."""
    return report.get("lift", {}).get("deferred", [])


def _count_members(report: dict, group, reproj) -> None:
    """The lift report's rigid groups' ``n_tracks`` and ``rigid_reproj_median_px`` after a
    geometry pass fitted the moving tracks to them (a lift with ``assign=False`` leaves 0 and
    None): over the tracks the pass did not fit as static points (``group`` / ``reproj``: the
    pass's output groups and reprojection errors, (N,))."""
    lift = report.get("lift", {})
    groups = lift.get("groups", [])
    rigid = [g["id"] for g in groups if g["kind"] == "rigid"]
    if not rigid:
        return
    from ..lift.prune import group_counts

    counts = group_counts(group, max(g["id"] for g in groups) + 1)
    errs = []
    for s in range(0, len(group), 1 << 16):
        gr = np.asarray(group[s:s + (1 << 16)])
        errs.append(np.asarray(reproj[s:s + (1 << 16)], np.float64)[np.isin(gr, rigid)])
    err = np.concatenate(errs)
    lift["rigid_reproj_median_px"] = round(float(np.nanmedian(err)), 4) \
        if np.isfinite(err).any() else None
    for g in groups:        # (the non-rigid group too: its tracks the pass left moving)
        g["n_tracks"] = int(counts[g["id"]])
        g["n_tracks_rule"] = "tracks the refinement did not fit as static points"


def needs_paths(mode: str) -> bool:
    """Whether the refinement reads the non-rigid tracks' lifted paths (a lift for it may leave
    them to :func:`_fill_paths` otherwise): in tripod mode the background sphere's radius is
    measured on the first tracks' lifted points, whatever their kind."""
    return mode == "tripod"


def _fill_paths(sol: dict, kind: np.ndarray, tracks_2d, out) -> None:
    """Give the kept solution's non-rigid tracks that the refinement left to the tracker
    (``kind`` 0) their paths in ``out`` where its lift left them out (``paths=False``, the
    report's ``deferred``; the others became static points or follow a rigid group)."""
    lifter = sol.get("lifter")
    nonrigid = [g["id"] for g in sol["report"].get("lift", {}).get("groups", [])
                if g["kind"] == "nonrigid"]
    if lifter is None or not nonrigid or "paths" not in _deferred(sol["report"]):
        return
    ids = np.flatnonzero((kind == 0) & (np.asarray(out["group"]) == nonrigid[0]))
    lifter.paths(tracks_2d, sol["lift_visible"], ids, out["tracks_3d"], out["reproj_error"])


def _dissolve_small_groups(sol: dict, data, out, final) -> None:
    """The kept solution's rigid groups that too few tracks follow after the final pass become
    non-rigid paths, their tracks given back the tracker's 2D
    (:func:`engine.lift.prune.dissolve_small_groups`); ``final``'s kinds and counts follow."""
    from ..lift.prune import dissolve_small_groups

    lifter = sol.get("lifter")
    if lifter is None:
        return
    names = ("tracks_2d", "visible", "confidence")     # (required arrays of a track file)
    rows = dissolve_small_groups(sol["report"].get("lift", {}), out["group"], lifter,
                                 data.tracks_2d, sol["lift_visible"], out["tracks_3d"],
                                 out["reproj_error"],
                                 restore=(tuple(getattr(data, n) for n in names),
                                          tuple(out[n] for n in names)))
    rigid_rows = rows[final.kind[rows] == 2]
    final.kind[rigid_rows] = 0
    final.report["n_rigid"] -= len(rigid_rows)
    final.report["n_tracker_kept"] += len(rigid_rows)


def _copy(src, budget, folder) -> np.ndarray:
    """A private copy of ``src``: ``np.array`` without a limit; with one, an array from
    ``budget.array`` filled in row blocks (pages released as it goes)."""
    if not budget.limited:
        return np.array(src)
    dst = budget.array(src.shape, src.dtype, folder)
    row = max(1, int(np.prod(src.shape[1:])) * src.dtype.itemsize)
    step = max(1, budget.block_bytes(0, 0.1) // row)
    for s in range(0, len(src), step):
        dst[s:s + step] = src[s:s + step]
        budget.release(dst, src)
    return dst


def _runs(rep: dict) -> int:
    """How many runs the solve behind a round made (its restarts; one without)."""
    return len(rep.get("restarts", ())) or 1


def _focal_sigma(rep: dict) -> float:
    s = rep.get("focal_sigma_rel")
    return float(s) if s is not None and np.isfinite(s) else np.inf


def _improves(agree_new: int, agree_kept: int, rep_new: dict, rep_kept: dict) -> bool:
    """A re-solve is better than the kept solution: ``MIN_GAIN`` more agreeing observations,
    or as many (``RESOLVE_TIE``) and a focal pinned better by ``RESOLVE_SIGMA_MARGIN``."""
    if agree_new > (1 + MIN_GAIN) * max(1, agree_kept):
        return True
    return agree_new >= (1 - RESOLVE_TIE) * agree_kept and \
        _focal_sigma(rep_new) < RESOLVE_SIGMA_MARGIN * _focal_sigma(rep_kept)


def _round_entry(i: int, rep: dict, res, accepted: bool, dropped: float) -> dict:
    return {"round": i, "accepted": accepted, "reproj_median_px": rep.get("reproj_median_px"),
            "focal_px": rep.get("focal_px"), "focal_sigma_rel": rep.get("focal_sigma_rel"),
            "solve_runs": _runs(rep),
            "n_static": res.report["n_static"],
            "n_rigid": res.report["n_rigid"],
            "agreeing_observations": res.report["agreeing_observations"],
            "dropped_observations": round(dropped, 6)}


def _dropped(visible, clean, rows: int = 16384) -> float:
    """Fraction of the tracker's visible observations that a geometry pass's cleaned visibility
    ``clean`` (N, T) drops: how much the next re-solve's input differs from the first solve's."""
    n_vis = n_kept = 0
    for s in range(0, len(clean), rows):
        v = np.asarray(visible[s:s + rows]).astype(bool)
        n_vis += int(v.sum())
        n_kept += int((v & np.asarray(clean[s:s + rows])).sum())
    return 1.0 - n_kept / max(1, n_vis)


def _dist(report: dict):
    d = report.get("distortion")
    return (d.get("k1", 0.0), d.get("k2", 0.0), d.get("k3", 0.0)) if d else None


def _rigid_ids(report: dict) -> set[int]:
    return {int(g["id"]) for g in report.get("lift", {}).get("groups", []) if g["kind"] == "rigid"}
