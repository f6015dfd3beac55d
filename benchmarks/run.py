"""The benchmark harness: render the suite (cached), run every method side by side, score, report.

    python -m benchmarks.run --suite quick|full --out FILE.md
        [--methods worldtrack,dis,lk,libmv,cv_camera] [--cache bench_cache] [--real]

For each clip of the suite (rendered once by :func:`benchmarks.generate.generate_clip` into
``<cache>/<suite>/<kind>_<seed>/``, reused while its settings hash matches), every method runs as
its own child process on the same frames and the same query points (the ground truth's
``query``), so wall time and peak RSS are measured per method (:func:`metrics.run_measured`).
Results are scored with :mod:`benchmarks.metrics` and written as markdown (one table per metric
family, per clip kind and mean, ratios between methods, the exact command and the machine) plus
a JSON file next to it with every number.

Methods: ``worldtrack`` (``python -m engine track`` then ``python -m engine solve``, focal
unknown as for a user; ``worldtrack_f`` passes the true focal to ``solve --focal``; reported as
"not available (reason)" when its CLI is missing or fails), ``dis``, ``lk``, ``cv_camera``
(focal given; ``cv_camera_auto`` focal estimated), ``libmv`` (Blender's tracker, focal given;
``libmv_auto`` focal refined; needs ``bpy``). The default runs all of them.

``--reuse M,...`` takes the outputs and costs that earlier runs of those methods recorded on the
same cached clips; ``--reuse-track worldtrack`` keeps Worldtrack's recorded 2D tracks (and that
step's cost) and runs only ``engine solve`` again, for changes to the solve and its refinement.
``--reuse-json FILE`` (with ``--reuse``): a reused method whose outputs are not in the cache
(e.g. a fresh checkout that only re-ran Worldtrack) takes its scores and cost from an earlier
report's JSON instead (e.g. ``BENCHMARKS.json``; same suite and clips), so a solve change can be
reported side by side with the baselines without re-running them.

``--real`` adds the real footage in ``../shared/data`` when present: 2D methods on BADJA
(segA, 3-px and TAP-Vid metrics on annotated frames) and mgtv_corners, camera methods on
kitti_seq1.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import metrics as M

ROOT = Path(__file__).resolve().parents[1]
try:  # the generator's list (bpy-free module); a fixed copy keeps scoring usable without it
    from .generate.clip import KINDS
except ImportError:  # pragma: no cover
    KINDS = ("static", "dynamic", "tripod", "zoom", "deform")

SUITE_NAMES = ("quick", "full", "effects")  # defined in benchmarks.generate.suite
ALL_METHODS = ("worldtrack", "worldtrack_f", "dis", "lk", "cv_camera", "cv_camera_auto", "libmv",
               "libmv_auto")
DEFAULT_METHODS = "worldtrack,dis,lk,libmv,libmv_auto,cv_camera,cv_camera_auto"
#: methods whose 2D tracks are another method's (left out of the 2D table)
SAME_2D = {"cv_camera": "lk", "cv_camera_auto": "lk", "libmv_auto": "libmv",
           "worldtrack_f": "worldtrack"}
CAMERA_METHODS = {"worldtrack", "worldtrack_f", "cv_camera", "cv_camera_auto", "libmv", "libmv_auto"}
#: Worldtrack's track density on the camera-only KITTI clip (input px; Track Clip's default)
KITTI_GRID = 8
METHOD_TIMEOUT_S = 900  # per method and clip; a run past it counts as failed


# ------------------------------------------------------------------------------------- clips
def suite_settings(suite: str) -> list:
    """The clips (``ClipSettings``) of a suite, from :mod:`benchmarks.generate.suite` (bpy-free)."""
    from .generate.suite import suite_clips

    return suite_clips(suite)


def ensure_clip(cache: Path, suite: str, settings, log=print) -> Path:
    """Render ``<cache>/<suite>/<kind>_<seed>`` in a child process unless it is cached with the
    same settings (the generator's cache key)."""
    from dataclasses import asdict

    from .generate.clip import is_cached

    out = cache / suite / f"{settings.kind}_{settings.seed}"
    if is_cached(out, settings):
        return out
    log(f"rendering {suite}/{out.name} ...")
    kw = ", ".join(f"{k}={v!r}" for k, v in asdict(settings).items())
    code = f"from benchmarks.generate import generate_clip; generate_clip({str(out)!r}, {kw})"
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.render.log", "wb") as fh:
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if r.returncode != 0 or not is_cached(out, settings):
        tail = (out.parent / f"{out.name}.render.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"rendering {out.name} failed: {' | '.join(tail)}")
    return out


def generator_available() -> str | None:
    """``None`` if clips can be rendered here, else the reason."""
    if importlib.util.find_spec("bpy") is None:
        return "bpy is not installed"
    if not (ROOT / "benchmarks" / "generate" / "suite.py").is_file():
        return "benchmarks.generate is missing"
    return None


# ----------------------------------------------------------------------------------- methods
@dataclass
class Clip:
    """What a method run needs: frames folder, queries, and the true focal (for 'focal given')."""

    name: str
    kind: str
    frames_dir: Path
    query: np.ndarray
    focal: float | None
    work: Path
    solve: bool = True  # False: footage without camera truth, 2D tracks only
    #: what Worldtrack tracks instead of the queries (camera-only clips: its own grid, as the
    #: camera baselines detect their own features and as a user's Track Clip does)
    track_args: list[str] | None = None


@dataclass
class RunResult:
    method: str
    clip: str
    kind: str
    ok: bool
    reason: str = ""
    out: Path | None = None
    cost: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)


def _method_cmds(method: str, clip: Clip, qpath: Path, out: Path) -> list[list[str]]:
    py = sys.executable
    if method.startswith("worldtrack"):
        tracked = out.with_name(f"{method}_track.npz") if clip.solve else out
        what = clip.track_args or ["--queries", str(qpath)]
        cmds = [[py, "-m", "engine", "track", str(clip.frames_dir), *what, "--out", str(tracked)]]
        if clip.solve:
            cmds.append([py, "-m", "engine", "solve", str(tracked), "--out", str(out)])
            if method == "worldtrack_f" and clip.focal:
                cmds[-1] += ["--focal", f"{clip.focal:.6f}"]
        return cmds
    base = method.replace("_auto", "")
    cmd = [py, "-m", "benchmarks.baselines", base, str(clip.frames_dir), "--queries", str(qpath),
           "--out", str(out)]
    if not method.endswith("_auto") and base in ("cv_camera", "libmv") and clip.focal:
        cmd += ["--focal", f"{clip.focal:.6f}"]
    if not clip.solve:
        cmd.append("--no-solve")
    return [cmd]


def method_unavailable(method: str) -> str | None:
    if method.startswith("libmv") and importlib.util.find_spec("bpy") is None:
        return "bpy is not installed"
    return None


def run_method(method: str, clip: Clip, timeout: float = METHOD_TIMEOUT_S,
               reuse: bool = False, reuse_track: bool = False) -> RunResult:
    """Run one method on one clip in child processes; returns its output path and cost.

    With ``reuse``, an output and cost recorded by an earlier successful run on the same clip
    (``<method>.run.json`` beside it) are taken instead of running again. With ``reuse_track``
    (Worldtrack only), the recorded 2D tracks of the ``engine track`` step and that step's
    recorded cost are kept and only ``engine solve`` runs again: for changes to the solve and
    its refinement, which cost minutes instead of the track step's hour over the full suite.
    """
    why = method_unavailable(method)
    if why:
        return RunResult(method, clip.name, clip.kind, False, why)
    clip.work.mkdir(parents=True, exist_ok=True)
    record = record_path(clip.work, method)
    rec = read_record(clip.work, method)
    if reuse and output_recorded(rec):
        return RunResult(method, clip.name, clip.kind, True, rec["reason"], Path(rec["out"]),
                         rec["cost"])
    track_step = None
    if reuse_track and method.startswith("worldtrack") and clip.solve and rec:
        track_step = recorded_track_step(clip.work, method, rec)
    r = _run_method(method, clip, timeout, track_step)
    record.unlink(missing_ok=True)
    if r.ok:
        record.write_text(json.dumps({"out": str(r.out), "reason": r.reason, "cost": r.cost,
                                      "steps": r.cost.pop("steps", [])}))
    r.cost.pop("steps", None)
    return r


def record_path(work: Path, method: str) -> Path:
    """Where ``method``'s last successful run in ``work`` is recorded (``<method>.run.json``)."""
    return work / f"{method}.run.json"


def read_record(work: Path, method: str) -> dict | None:
    """The record (:func:`record_path`) of ``method``'s last successful run in ``work``, if any."""
    record = record_path(work, method)
    return json.loads(record.read_text()) if record.is_file() else None


def output_recorded(rec: dict | None) -> bool:
    """Whether the record ``rec`` (:func:`read_record`) names an output that still exists."""
    return bool(rec) and Path(rec["out"]).is_file()


def recorded_track_step(work: Path, method: str, rec: dict) -> dict | None:
    """Wall time and peak RSS of the recorded ``engine track`` step of ``method`` in ``work``,
    or None when its tracks are gone or were not written by a successful run.

    Records written before per-step costs were kept hold only the total: the track step's wall
    time is then the total less the solve's (the solve log's last write less the track log's,
    as the solve starts when the track step ends), and its peak RSS is the run's peak (an upper
    bound).
    """
    if not (work / f"{method}_track.npz").is_file() or rec.get("reason", "").startswith("solve failed"):
        return None
    steps = rec.get("steps") or []
    if steps:
        return dict(steps[0])
    logs = [work / f"{method}.{i}.log" for i in (0, 1)]
    if not all(p.is_file() for p in logs):
        return None
    solve_wall = max(0.0, logs[1].stat().st_mtime - logs[0].stat().st_mtime)
    cost = rec["cost"]
    return {"wall_s": max(0.0, cost["wall_s"] - solve_wall), "peak_rss_mb": cost["peak_rss_mb"]}


def _run_method(method: str, clip: Clip, timeout: float,
                track_step: dict | None = None) -> RunResult:
    qpath = clip.work / "queries.npy"
    if not qpath.is_file():
        np.save(qpath, clip.query.astype(np.float32))
    out = clip.work / f"{method}.npz"
    out.unlink(missing_ok=True)
    wall, peak, steps = 0.0, 0.0, []
    n, t = len(clip.query), _n_frames(clip)
    for i, cmd in enumerate(_method_cmds(method, clip, qpath, out)):
        log = clip.work / f"{method}.{i}.log"
        if i == 0 and track_step is not None:  # the recorded tracks stand for this step
            c = M.Cost(track_step["wall_s"], track_step["peak_rss_mb"])
        else:
            c = M.run_measured(cmd, point_frames=n * t, timeout=timeout, cwd=str(ROOT),
                               log_path=str(log))
        if c.returncode == -9:
            return RunResult(method, clip.name, clip.kind, False, f"timed out after {timeout:.0f} s")
        wall += c.wall_s
        peak = max(peak, c.peak_rss_mb)
        steps.append({"wall_s": c.wall_s, "peak_rss_mb": c.peak_rss_mb})
        if c.returncode != 0:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            tail = lines[-1][:200] if lines else f"exit code {c.returncode}"
            step = cmd[3] if method.startswith("worldtrack") else method
            if method.startswith("worldtrack") and i == 1 and \
                    out.with_name(f"{method}_track.npz").is_file():
                # tracking worked, the solve did not: still score the 2D tracks
                out = out.with_name(f"{method}_track.npz")
                return RunResult(method, clip.name, clip.kind, True, f"solve failed: {tail}", out,
                                 {"wall_s": wall, "peak_rss_mb": peak,
                                  "throughput_pf_s": n * t / wall})
            return RunResult(method, clip.name, clip.kind, False, f"{step}: {tail}")
    if not out.is_file():
        return RunResult(method, clip.name, clip.kind, False, "no output file")
    return RunResult(method, clip.name, clip.kind, True, "", out,
                     {"wall_s": wall, "peak_rss_mb": peak, "throughput_pf_s": n * t / wall,
                      "steps": steps})


def _n_frames(clip: Clip) -> int:
    from .baselines._io import list_frames

    return max(1, len(list_frames(clip.frames_dir)))


# ----------------------------------------------------------------------------------- scoring
def _solved_mask(pred) -> np.ndarray:
    solve = pred.metadata.get("solve") or {}
    t = pred.n_frames
    if "solved_frames" in solve:
        m = np.zeros(t, bool)
        idx = [i for i in solve["solved_frames"] if 0 <= i < t]
        m[idx] = True
        return m
    ok = bool(solve.get("success", True))
    return np.full(t, ok) & np.isfinite(np.asarray(pred.cam_to_world)).all(axis=(1, 2))


def score_synthetic(gt, pred, method: str, solve_failed: bool = False) -> dict[str, float]:
    """All metric families of one prediction against rendered ground truth (``solve_failed``:
    only 2D tracks came out; the camera scores as unsolved)."""
    q = np.asarray(gt.query)
    s = M.tapvid_metrics(q[:, 0], ~np.asarray(gt.visible), np.asarray(gt.tracks_2d),
                         ~np.asarray(pred.visible), np.asarray(pred.tracks_2d), "first",
                         image_size=gt.image_size)
    out = {f"2d.{k}": v for k, v in s.items()}
    if method in CAMERA_METHODS:
        solved = np.zeros(pred.n_frames, bool) if solve_failed else _solved_mask(pred)
        reproj = M.reprojection_error(pred.tracks_2d, pred.visible, pred.tracks_3d,
                                      pred.cam_to_world, pred.K)
        cam = M.camera_metrics(pred.cam_to_world, gt.cam_to_world, pred.K, gt.K, solved=solved,
                               reproj_error_px=reproj)
        out.update({f"cam.{k}": v for k, v in cam.items()})
        fin = solved & np.isfinite(np.asarray(pred.cam_to_world)).all(axis=(1, 2))
        if fin.sum() >= 2:
            al = M.align_sim3(np.asarray(pred.cam_to_world)[fin], np.asarray(gt.cam_to_world)[fin])
            w = M.world_track_metrics(gt.tracks_3d, gt.visible, gt.cam_to_world, gt.K,
                                      pred.tracks_3d, pred.cam_to_world, q[:, 0], gt.group,
                                      align=al)
            out.update({f"3d.{k}": v for k, v in w.items()})
    return out


def load_prior(path: Path) -> dict:
    """Results of an earlier report's JSON (``--reuse-json``), keyed by (method, clip); the
    real-footage results under (method, "real:" + clip)."""
    blob = json.loads(Path(path).read_text())
    out = {(r["method"], r["clip"]): r for r in blob.get("results", [])}
    for family, rows in (blob.get("real") or {}).items():
        if isinstance(rows, list):
            out.update({(r["method"], "real:" + r["clip"]): r for r in rows})
    return out


def prior_result(prior: dict | None, method: str, clip: Clip, key: str | None = None) \
        -> RunResult | None:
    """``method``'s result on ``clip`` from ``prior`` (:func:`load_prior`) when the cache holds
    no recorded output of it, else None (the cached output is scored again)."""
    if not prior or output_recorded(read_record(clip.work, method)):
        return None
    r = prior.get((method, key or clip.name))
    if r is None:
        return None
    return RunResult(method, clip.name, clip.kind, bool(r["ok"]), r.get("reason", ""), None,
                     dict(r.get("cost") or {}), dict(r.get("scores") or {}))


# ------------------------------------------------------------------------------------- suite
def run_suite(suite: str, methods: list[str], cache: Path, log=print,
              only: set[str] | None = None, reuse: frozenset[str] = frozenset(),
              reuse_track: frozenset[str] = frozenset(), prior: dict | None = None) \
        -> list[RunResult]:
    """Render (cached) and run ``methods`` on every clip of ``suite`` (or the ``only`` names,
    ``<kind>_<seed>``); reused methods without cached outputs come from ``prior``
    (:func:`prior_result`)."""
    from engine.trackfile import load_trackfile

    results: list[RunResult] = []
    sts = [st for st in suite_settings(suite) if not only or f"{st.kind}_{st.seed}" in only]
    if only and not sts:
        raise SystemExit(f"--clips {','.join(sorted(only))} matches no clip of suite {suite!r}")
    for st in sts:
        kind, seed = st.kind, st.seed
        cdir = ensure_clip(cache, suite, st, log)
        gt = load_trackfile(cdir / "gt.npz")
        clip = Clip(f"{kind}_{seed}", kind, cdir / "frames", np.asarray(gt.query),
                    float(np.sqrt(gt.K[0, 0, 0] * gt.K[0, 1, 1])),
                    cache / "results" / suite / f"{kind}_{seed}")
        for m in methods:
            r = prior_result(prior, m, clip) if m in reuse else None
            if r is not None:
                log(f"  {clip.name:12s} {m:15s} from the earlier report")
                results.append(r)
                continue
            r = run_method(m, clip, reuse=m in reuse, reuse_track=m in reuse_track)
            if r.ok:
                try:
                    r.scores = score_synthetic(gt, load_trackfile(r.out), m,
                                               solve_failed=r.reason.startswith("solve failed"))
                except Exception as e:  # noqa: BLE001 - an invalid output is a failed run
                    r.ok, r.reason = False, f"invalid output: {e}"
            log(f"  {clip.name:12s} {m:15s} "
                + (f"AJ={r.scores.get('2d.average_jaccard', float('nan')):.3f} "
                   f"{r.cost.get('wall_s', 0):.1f}s" if r.ok else f"FAILED ({r.reason})"))
            results.append(r)
    return results


def run_real(methods: list[str], cache: Path, log=print, reuse: frozenset[str] = frozenset(),
             prior: dict | None = None) -> dict:
    """Real footage from ../shared/data (when present); reused methods without cached outputs
    come from ``prior`` (:func:`prior_result`)."""
    from engine.trackfile import load_trackfile

    from . import realdata as R

    root = R.shared_data_dir()
    if root is None:
        return {"available": False, "reason": f"{R.SHARED_DATA} not found"}
    out: dict = {"available": True, "badja": [], "mgtv": [], "kitti": []}
    two_d = [m for m in methods if m in ("worldtrack", "dis", "lk", "libmv")]
    work = cache / "real"
    exs = []
    for name in ("dog", "bear"):
        if (root / "badja_davis" / f"{name}.npz").is_file():
            exs.append(("badja", R.load_badja(root / "badja_davis", name)))
    if (root / "mgtv_corners" / "groundtruth.txt").is_file():
        exs.append(("mgtv", R.load_mgtv_corners(root / "mgtv_corners")))
    for family, ex in exs:
        cdir = R.materialise_frames(ex, work / f"{family}_{ex.name}")
        n_fr = len(list((cdir / "frames").glob("*.png")))
        t = min(n_fr, ex.points.shape[1])
        clip = Clip(ex.name, family, cdir / "frames", ex.query, None, work / "results" / ex.name,
                    solve=False)
        for m in two_d:
            r = prior_result(prior, m, clip, "real:" + ex.name) if m in reuse else None
            if r is not None:
                out[family].append(r)
                continue
            r = run_method(m, clip, reuse=m in reuse)
            if r.ok:
                pred = load_trackfile(r.out)
                pr_tr = np.asarray(pred.tracks_2d)[:, :t]
                pr_vis = np.asarray(pred.visible)[:, :t]
                s = M.tapvid_metrics(ex.query[:, 0], ex.occluded[:, :t], ex.points[:, :t], ~pr_vis,
                                     pr_tr, "first", image_size=ex.image_size,
                                     eval_mask=None if ex.eval_mask is None else ex.eval_mask[:, :t])
                if family == "badja":
                    s.update(R.badja_metrics(ex, np.pad(pr_tr, ((0, 0), (0, ex.points.shape[1] - t),
                                                                (0, 0)), constant_values=np.nan)))
                else:
                    err = np.linalg.norm(pr_tr - ex.points[:, :t], axis=-1)
                    s["mean_corner_err_px"] = float(np.nanmean(np.where(np.isfinite(err), err, np.nan)))
                r.scores = s
            log(f"  real {ex.name:12s} {m:15s} " + ("ok" if r.ok else f"FAILED ({r.reason})"))
            out[family].append(r)
    kdir = root / "kitti_seq1"
    if (kdir / "poses.txt").is_file():
        seq = R.load_kitti_sequence(kdir)
        w, h = seq.image_size
        xs, ys = np.meshgrid(np.linspace(16, w - 17, 16), np.linspace(16, h - 17, 8))
        q = np.stack([np.zeros(xs.size), xs.ravel(), ys.ravel()], 1).astype(np.float32)
        clip = Clip("kitti_seq1", "kitti", seq.frames[0].parent, q, float(seq.K[0, 0, 0]),
                    work / "results" / "kitti_seq1", track_args=["--grid", str(KITTI_GRID)])
        for m in [m for m in methods if m in CAMERA_METHODS]:
            r = prior_result(prior, m, clip, "real:kitti_seq1") if m in reuse else None
            if r is not None:
                out["kitti"].append(r)
                continue
            r = run_method(m, clip, reuse=m in reuse)
            if r.ok:
                pred = load_trackfile(r.out)
                r.scores = M.camera_metrics(pred.cam_to_world, seq.cam_to_world, pred.K, seq.K,
                                            solved=_solved_mask(pred))
            log(f"  real kitti_seq1   {m:15s} " + ("ok" if r.ok else f"FAILED ({r.reason})"))
            out["kitti"].append(r)
    return out


# ---------------------------------------------------------------------------------- markdown
def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu": platform.processor() or "unknown", "cores": os.cpu_count(), "ram_gb": None,
            "gpu": "none"}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["ram_gb"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            info["gpu"] = r.stdout.strip().replace("\n", "; ")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib import metadata

    for pkg in ("numpy", "opencv-python-headless", "bpy", "scipy", "onnxruntime"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return info


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float) and np.isinf(v):
        return "∞"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + \
           ["| " + " | ".join(r) + " |" for r in rows]


#: family -> (title, [(key, label)], headline key, higher is better)
FAMILIES = {
    "2d": ("2D tracking — TAP-Vid metrics ('first' queries, coordinates rescaled to 256×256)",
           [("2d.average_jaccard", "AJ"), ("2d.average_pts_within_thresh", "δ_avg"),
            ("2d.occlusion_accuracy", "OA"), ("2d.pts_within_1", "<1px"),
            ("2d.pts_within_4", "<4px"), ("2d.pts_within_16", "<16px")],
           "2d.average_jaccard", True),
    "3d": ("3D world-centric tracks — Sim(3)-aligned, TAPVid-3D depth-adaptive APD",
           [("3d.apd3d_all", "APD all"), ("3d.apd3d_static", "APD static"),
            ("3d.apd3d_dynamic", "APD dynamic"), ("3d.median_err3d_static", "med. err static (m)"),
            ("3d.median_err3d_dynamic", "med. err dyn. (m)"), ("3d.coverage3d_all", "coverage")],
           "3d.apd3d_all", True),
    "cam": ("Camera solve",
            [("cam.ate", "ATE (m)"), ("cam.ate_pct", "ATE %path"), ("cam.are_deg", "rot. err °"),
             ("cam.rpe_rot_deg", "RPE °/frame"), ("cam.rpe_trans", "RPE trans (m)"),
             ("cam.focal_err_median", "focal rel. err"), ("cam.reproj_error_px", "reproj px"),
             ("cam.solved_fraction", "solved frames"), ("cam.success", "success")],
            "cam.ate_pct", False),
    "cost": ("Cost (per clip; child-process wall time and peak RSS)",
             [("cost.wall_s", "wall s"), ("cost.peak_rss_mb", "peak RSS MiB"),
              ("cost.throughput_pf_s", "point-frames/s")], "cost.wall_s", False),
}


def _collect(results: list[RunResult]) -> dict[str, dict[str, list[dict]]]:
    """method -> kind -> list of score dicts (cost folded in as cost.*)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in results:
        if not r.ok:
            continue
        d = dict(r.scores)
        d.update({f"cost.{k}": v for k, v in r.cost.items()})
        out.setdefault(r.method, {}).setdefault(r.kind, []).append(d)
    return out


def _mean(dicts: list[dict], key: str) -> float:
    vals = np.array([d.get(key, np.nan) for d in dicts], dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    return float(np.mean(vals)) if len(vals) else float("nan")


def render_markdown(suite: str, methods: list[str], results: list[RunResult], real: dict | None,
                    command: str, elapsed: float, only: set[str] | None = None) -> str:
    info = machine_info()
    by = _collect(results)
    lines = [f"# Worldtrack benchmark — suite `{suite}`", "",
             f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
             f"in {elapsed:.0f} s by:", "", "```", command, "```", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GiB RAM, GPU: "
             f"{info['gpu']}; Python {info['python']}, numpy {info.get('numpy', '?')}, OpenCV "
             f"{info.get('opencv-python-headless', '?')}, bpy {info.get('bpy', 'absent')}.", ""]
    sts = [st for st in suite_settings(suite) if not only or f"{st.kind}_{st.seed}" in only]
    c0 = sts[0]
    effects = sorted({e for st in sts for e, on in (("motion blur", st.motion_blur),
                      (f"noise {st.noise:g}", st.noise > 0), ("exposure changes", st.exposure_change))
                      if on})
    lines += [f"Clips: {len(sts)} — kinds {', '.join(sorted({st.kind for st in sts}, key=KINDS.index))}"
              f" × seeds {sorted({st.seed for st in sts})}, {c0.width}×{c0.height}, {c0.n_frames} "
              f"frames at {c0.fps:g} fps, {c0.n_queries} queries per clip (jittered grid at frame 0 "
              f"plus random later frames), Cycles {c0.samples} samples"
              + (f", effects: {', '.join(effects)}" if effects else "")
              + ". Every method sees the same PNG frames and queries."
              + (f" **Partial suite** (`--clips`): only {', '.join(sorted(only))}." if only else ""),
              ""]
    failed = [r for r in results if not r.ok]
    lines += ["## Methods", ""]
    for m in methods:
        rs = [r for r in results if r.method == m]
        bad = [r for r in rs if not r.ok]
        if rs and len(bad) == len(rs):
            lines.append(f"- **{m}**: not available ({bad[0].reason})")
        else:
            note = f"; failed on {len(bad)} clip(s): " + "; ".join(
                f"{r.clip}: {r.reason}" for r in bad[:3]) if bad else ""
            part = [r for r in rs if r.ok and r.reason]
            if part:
                note += f"; partial on {len(part)} clip(s): " + "; ".join(
                    f"{r.clip}: {r.reason}" for r in part[:3])
            lines.append(f"- **{m}**: ran on {len(rs) - len(bad)}/{len(rs)} clips{note}")
    lines.append("")
    kinds = [k for k in KINDS if any(k in v for v in by.values())]
    for fam, (title, cols, head, higher) in FAMILIES.items():
        ms = [m for m in methods if m in by and any(
            not np.isnan(_mean(sum(by[m].values(), []), c[0])) for c in cols)]
        if fam == "2d":
            ms = [m for m in ms if not (m in SAME_2D and SAME_2D[m] in ms)]
        if not ms:
            continue
        lines += [f"## {title}", ""]
        if fam == "2d":
            same = [f"{m} = {SAME_2D[m]}" for m in methods if m in SAME_2D and SAME_2D[m] in ms]
            if same:
                lines += [f"(2D tracks shared: {', '.join(same)}.)", ""]
        lines += ["Mean over all clips:", ""]
        rows = [[m] + [_fmt(_mean(sum(by[m].values(), []), k)) for k, _ in cols] for m in ms]
        lines += _table(["method"] + [lab for _, lab in cols], rows) + [""]
        lab = dict(cols)[head]
        lines += [f"{lab} per clip kind:", ""]
        rows = [[m] + [_fmt(_mean(by[m].get(k, []), head)) for k in kinds]
                + [_fmt(_mean(sum(by[m].values(), []), head))] for m in ms]
        lines += _table(["method"] + kinds + ["mean"], rows) + [""]
        if fam in ("2d", "3d", "cam") and len(ms) > 1:
            lines += [f"Ratios of mean {lab} (row ÷ column; "
                      f"{'higher' if higher else 'lower'} is better):", ""]
            means = {m: _mean(sum(by[m].values(), []), head) for m in ms}
            rows = [[m] + [_fmt(means[m] / means[c]) if means[c] not in (0.0,) and not np.isnan(
                means[c]) else "–" for c in ms] for m in ms]
            lines += _table([""] + ms, rows) + [""]
    if failed:
        lines += ["## Failures", ""] + [f"- {r.method} on {r.clip}: {r.reason}" for r in failed] + [""]
    if real is not None:
        lines += _real_markdown(real)
    lines += ["## Definitions", "",
              "- 2D: deepmind/tapnet `compute_tapvid_metrics`, 'first' mode (frames after each "
              "query's frame), coordinates scaled to 256×256; AJ = mean Jaccard over 1,2,4,8,16 px; "
              "δ_avg = mean fraction within those thresholds (visible points); OA = occlusion "
              "accuracy.",
              "- 3D: predicted cameras are Sim(3)-aligned to the truth (rotation from the camera "
              "orientations, scale and translation fitted to the centres: Umeyama on centres alone "
              "leaves the roll about a near-straight path free), the same transform maps predicted "
              "`tracks_3d`; APD = mean over δ∈{1,2,4,8,16} of the fraction of "
              "visible point-frames with 3D error < δ·z/f (TAPVid-3D's depth-adaptive threshold, "
              "z the true depth, f the true focal). Baselines lift their 2D tracks by triangulating "
              "them as static points.",
              "- Camera: ATE = RMSE of camera centres after Umeyama Sim(3) on the centres (as evo; "
              "also as % of the true path length, – for a tripod); rot. err = mean orientation "
              "error under the pose alignment of the 3D metrics; RPE over consecutive "
              "frames with the Sim(3) scale; focal error = median |f−f*|/f*; reproj = mean "
              "distance between a method's own 2D tracks and its projected 3D points; success = "
              "≥90 % frames solved and ATE ≤ 5 % of path (tripod: rotation error ≤ 2°). "
              "`cv_camera`/`libmv` are given the true focal (first frame's, for zoom clips); "
              "the `_auto` variants estimate it.",
              "- libmv 2D: one marker per query placed at the query pixel on its frame and tracked "
              "both ways with Blender's tracker (after the camera solve, so it does not use them).",
              ""]
    return "\n".join(lines)


def _real_markdown(real: dict) -> list[str]:
    lines = ["## Real footage (../shared/data)", ""]
    if not real.get("available"):
        return lines + [f"Not run: {real.get('reason')}.", ""]
    for fam, title, cols in (
            ("badja", "BADJA (DAVIS dog, bear): animal joints, annotated frames after the query",
             [("segA", "segA"), ("acc_3px", "3px acc"), ("average_jaccard", "AJ"),
              ("average_pts_within_thresh", "δ_avg"), ("occlusion_accuracy", "OA")]),
            ("mgtv", "mgtv_corners: 4 corners of a planar region, 1920×1080",
             [("mean_corner_err_px", "mean err px"), ("average_pts_within_thresh", "δ_avg")]),
            ("kitti", "KITTI odometry excerpt (kitti_seq1, 51 frames): camera solve",
             [("ate", "ATE (m)"), ("ate_pct", "ATE %path"), ("are_deg", "rot. err °"),
              ("rpe_rot_deg", "RPE °/frame"), ("rpe_trans", "RPE trans (m)"),
              ("focal_err_median", "focal rel. err"), ("solved_fraction", "solved"),
              ("success", "success")])):
        rs = real.get(fam) or []
        if not rs:
            continue
        lines += [f"### {title}", ""]
        rows = []
        for r in rs:
            if r.ok:
                rows.append([r.method, r.clip] + [_fmt(r.scores.get(k)) for k, _ in cols]
                            + [_fmt(r.cost.get("wall_s"), 1)])
            else:
                rows.append([r.method, r.clip] + ["–"] * len(cols) + [f"failed: {r.reason}"])
        lines += _table(["method", "clip"] + [lab for _, lab in cols] + ["wall s"], rows) + [""]
    return lines


def _jsonable(results: list[RunResult]) -> list[dict]:
    return [{"method": r.method, "clip": r.clip, "kind": r.kind, "ok": r.ok, "reason": r.reason,
             "cost": r.cost, "scores": r.scores} for r in results]


# ------------------------------------------------------------------------------------------ CLI
def parse_methods(text: str) -> list[str]:
    out = []
    for m in (x.strip() for x in text.split(",") if x.strip()):
        if m not in ALL_METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(ALL_METHODS)}")
        if m not in out:
            out.append(m)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=SUITE_NAMES, default="quick")
    ap.add_argument("--out", required=True, help="markdown report path (a .json is written beside it)")
    ap.add_argument("--methods", default=DEFAULT_METHODS,
                    help=f"comma-separated, from {', '.join(ALL_METHODS)} (default {DEFAULT_METHODS})")
    ap.add_argument("--cache", default="bench_cache", help="rendered clips and method outputs")
    ap.add_argument("--real", action="store_true", help="also run on ../shared/data when present")
    ap.add_argument("--clips", default="", help="only these clips of the suite, e.g. static_0,dynamic_0")
    ap.add_argument("--reuse", default="",
                    help="comma-separated methods whose outputs and costs from an earlier run on the "
                         "same cached clips are reused (e.g. the unchanged baselines)")
    ap.add_argument("--reuse-track", default="",
                    help="worldtrack methods whose recorded `engine track` output and cost are "
                         "kept while `engine solve` runs again (for solve/refinement changes)")
    ap.add_argument("--reuse-json", default="",
                    help="an earlier report's JSON (e.g. BENCHMARKS.json): --reuse methods whose "
                         "outputs are not cached take their scores and cost from it")
    a = ap.parse_args(argv)
    # SIGTERM (e.g. from `timeout`) -> SystemExit, so running children are killed, not orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    methods = parse_methods(a.methods)
    t0 = time.perf_counter()
    cache = Path(a.cache).resolve()
    why = generator_available()
    if why:
        print(f"error: cannot render the benchmark clips: {why}", file=sys.stderr)
        return 2
    only = {c.strip() for c in a.clips.split(",") if c.strip()} or None
    reuse = frozenset(parse_methods(a.reuse)) if a.reuse else frozenset()
    reuse_track = frozenset(parse_methods(a.reuse_track)) if a.reuse_track else frozenset()
    prior = load_prior(Path(a.reuse_json)) if a.reuse_json else None
    results = run_suite(a.suite, methods, cache, only=only, reuse=reuse, reuse_track=reuse_track,
                        prior=prior)
    real = None
    if a.real:
        try:
            real = run_real(methods, cache, reuse=reuse, prior=prior)
        except Exception as e:  # noqa: BLE001 - the synthetic results must still be written
            real = {"available": False, "reason": f"error: {type(e).__name__}: {e}"}
    command = "python -m benchmarks.run " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    md = render_markdown(a.suite, methods, results, real, command, time.perf_counter() - t0, only)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + kept_section(out))
    blob = {"suite": a.suite, "methods": methods, "machine": machine_info(), "command": command,
            "results": _jsonable(results)}
    if real is not None:
        blob["real"] = {k: (_jsonable(v) if isinstance(v, list) else v) for k, v in real.items()}
    out.with_suffix(".json").write_text(json.dumps(blob, indent=1, default=_json_default))
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


KEEP_MARKER = "<!-- measurements below are not produced by benchmarks.run; it keeps them -->"


def kept_section(path: Path) -> str:
    """The hand-recorded part of an earlier report (from KEEP_MARKER on), kept across re-runs."""
    if not path.is_file():
        return ""
    text = path.read_text()
    i = text.find(KEEP_MARKER)
    return "" if i < 0 else "\n" + text[i:]


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
