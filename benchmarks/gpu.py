"""GPU measurement (issue 4): 1920×1080 × 200 frames, every pixel and stride 4, with GPU memory.

    python -m benchmarks.gpu --out bench_out/gpu [--size 1920x1080] [--frames 200] [--device D]
                             [--runs dense,stride4,dense640]

Renders the long-clip pan of :mod:`benchmarks.longclip` at that size (exact ground truth,
cached), chooses the backend -- onnxruntime's CUDA provider when the installed onnxruntime has a
working one (``--device cuda``), else the kernels' torch source on CUDA (``--device torch-cuda``;
the GPU machine's onnxruntime may lack CUDA and onnxruntime-gpu cannot be carried there), else
the CPU -- and says which, then runs ``engine track --max-side 0`` on every pixel of frame 0
(dense mode: new tracks where surface appears), on a stride-4 grid and, with ``--runs
dense640``, on every pixel at the default 640-px working resolution. For each run: wall time,
the child's peak RSS, peak GPU memory (``nvidia-smi`` polled every 0.2 s, above the idle level),
throughput in tracked point-frames per second, and the accuracy of the frame-0 background tracks
against the exact pan (median error and fraction within 1 px over visible frames). Results go to
``<out>/gpu.json`` (rewritten after each run) and a markdown table on stdout. ``--device`` forces
a backend.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .longclip import ROOT, PanSettings, fmt, render


def choose_device() -> tuple[str, str]:
    """The fastest working backend here and why: (device, reason)."""
    from engine.runtime import select_providers

    try:
        providers, why = select_providers("auto")
        if "CUDAExecutionProvider" in providers:
            return "cuda", why
    except RuntimeError as e:  # pragma: no cover - auto never raises today
        why = str(e)
    try:
        import torch

        if torch.cuda.is_available():
            return "torch-cuda", f"onnxruntime: {why}; torch {torch.__version__} has CUDA"
    except ImportError:
        pass
    return "cpu", f"no GPU backend ({why})"


class GpuMemoryPoller:
    """Peak GPU memory in use (MiB, all processes) while running, from ``nvidia-smi``; ``None``
    where there is no nvidia-smi."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.exe = shutil.which("nvidia-smi")
        self.base = self.peak = None
        self._stop = threading.Event()

    def _read(self) -> float | None:
        try:
            out = subprocess.run([self.exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return float(sum(float(x) for x in out.split()))
        except (OSError, ValueError, subprocess.SubprocessError):
            return None

    def __enter__(self) -> "GpuMemoryPoller":
        if self.exe:
            self.base = self._read()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            v = self._read()
            if v is not None:
                self.peak = v if self.peak is None else max(self.peak, v)
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.exe:
            self._thread.join(timeout=5)

    @property
    def used_mb(self) -> float | None:
        if self.peak is None or self.base is None:
            return None
        return max(0.0, self.peak - self.base)


def background_accuracy(st: PanSettings, track_path: Path) -> dict[str, float]:
    """Median error (px) and fraction within 1 px of frame-0 tracks off the occluder, over the
    frames where the truth is inside the image and the tracker says visible; and the fraction of
    those truth-visible frames the tracker marks visible."""
    from engine.trackfile import load_trackfile

    d = load_trackfile(track_path)
    q = np.asarray(d.query)
    off, occ = st.offsets(), st.occluder()
    w, h = st.size
    x0, y0, x1, y1 = occ[0]
    sel = np.flatnonzero((np.round(q[:, 0]) == 0) & ~((q[:, 1] > x0 - 3) & (q[:, 1] < x1 + 3)
                                                     & (q[:, 2] > y0 - 3) & (q[:, 2] < y1 + 3)))
    sel = sel[:: max(1, len(sel) // 20000)]                 # a bounded sample of tracks
    truth = q[sel, None, 1:3] + off[0][None, None] - off[None]
    tx, ty = truth[..., 0], truth[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    under = ((tx >= occ[None, :, 0]) & (tx <= occ[None, :, 2]) & (ty >= occ[None, :, 1])
             & (ty <= occ[None, :, 3]))
    gt_vis = inside & ~under
    gt_vis[:, 0] = False
    vis = np.asarray(d.visible[sel]) & gt_vis
    err = np.linalg.norm(np.asarray(d.tracks_2d[sel]) - truth, axis=-1)[vis]
    return {"median_err_px": float(np.median(err)) if err.size else float("nan"),
            "within_1px": float((err < 1).mean()) if err.size else float("nan"),
            "recall_visible": float(vis.sum() / max(1, gt_vis.sum()))}


#: run name -> extra ``engine track`` arguments (after ``--max-side 0``: every input pixel is a
#: working pixel). ``dense640``: every pixel at the default working resolution (640 px wide),
#: what a user's dense run on such footage tracks.
RUNS = {"dense": [], "stride4": ["--grid", "4"], "dense640": ["--max-side", "640"]}
DEFAULT_RUNS = ("dense", "stride4")


def run(st: PanSettings, out: Path, device: str, reason: str, timeout: float = 36000,
        runs: tuple[str, ...] = DEFAULT_RUNS) -> dict:
    """Track the pan once per run in ``runs`` (names of :data:`RUNS`); ``<out>/gpu.json`` is
    rewritten after each, so a run cut short still leaves the finished ones' numbers."""
    from engine.trackfile import load_trackfile

    from .metrics import run_measured

    t0 = time.monotonic()
    clip = render(st, out / f"pan_{st.size[0]}x{st.size[1]}_{st.frames}")
    res = {"settings": {**st.__dict__}, "device": device, "device_reason": reason,
           "render_s": time.monotonic() - t0, "runs": {}}
    for name in runs:
        extra = RUNS[name]
        path = out / f"{name}.npz"
        path.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "engine", "track", str(clip / "frames"), "--out", str(path),
               "--max-side", "0", "--device", device, "--progress", "lines", *extra]
        with GpuMemoryPoller() as gpu:
            c = run_measured(cmd, timeout=timeout, cwd=str(ROOT), log_path=str(out / f"{name}.log"))
        r = {"wall_s": c.wall_s, "peak_rss_mb": c.peak_rss_mb, "gpu_mem_mb": gpu.used_mb,
             "returncode": c.returncode}
        if c.returncode == 0:
            d = load_trackfile(path)
            r.update(n_tracks=d.n_tracks, point_frames_per_s=d.n_tracks * d.n_frames / c.wall_s,
                     anchor_windows=d.metadata["engine"]["settings"].get("anchor_windows"),
                     timings=d.metadata.get("timings"), **background_accuracy(st, path))
        res["runs"][name] = r
        path.unlink(missing_ok=True)      # GBs at full density; the numbers are what we keep
        (out / "gpu.json").write_text(json.dumps(res, indent=1))
    return res


def table(res: dict) -> str:
    def f(v, spec="{:.0f}"):
        return fmt(v, spec)

    w, h = res["settings"]["size"]
    rows = [f"Clip {w}×{h} × {res['settings']['frames']} frames; device `{res['device']}` "
            f"({res['device_reason']}).", "",
            "| run | tracks | wall s | point-frames/s | peak RSS MiB | GPU MiB | median err px | <1 px |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in res["runs"].items():
        rows.append(f"| {name} | {f(r.get('n_tracks'))} | {f(r['wall_s'])} | "
                    f"{f(r.get('point_frames_per_s'))} | {f(r['peak_rss_mb'])} | "
                    f"{f(r['gpu_mem_mb'])} | {f(r.get('median_err_px'), '{:.3f}')} | "
                    f"{f(r.get('within_1px'), '{:.3f}')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1920x1080", help="WxH")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--device", default=None,
                    choices=("cuda", "torch-cuda", "cpu", "torch-cpu"),
                    help="force a backend (default: the fastest that works here)")
    ap.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                    help=f"comma-separated runs, in order, of: {', '.join(RUNS)}")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    runs = tuple(r.strip() for r in a.runs.split(",") if r.strip())
    if not runs or any(r not in RUNS for r in runs):
        ap.error(f"--runs: choose from {', '.join(RUNS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device, reason = (a.device, "requested") if a.device else choose_device()
    t0 = time.monotonic()
    res = run(PanSettings(frames=a.frames, size=(w, h), speed=1.3 * w / 128), out, device, reason,
              runs=runs)
    res["total_s"] = time.monotonic() - t0
    (out / "gpu.json").write_text(json.dumps(res, indent=1))
    print(table(res))
    return 0 if all(r["returncode"] == 0 for r in res["runs"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
