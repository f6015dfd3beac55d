"""The demo (`make demo`): track + solve the bundled sample clip and build the Blender scene.

    python -m tools.demo --out demo_out [--clip samples/sample/clip.mp4] [--ground-truth]

Writes into ``--out``:
- ``tracks.npz`` (engine track), ``solved.npz`` (engine solve) — track files;
- ``worldtrack_demo.blend``: solved camera with the clip as background, animated empties, a
  point-cache mesh (``points.pc2`` + Mesh Cache modifier), a CG object attached to a tracked surface;
- ``preview.png``: a Cycles render of the attached CG over the footage;
- ``summary.json`` / printed summary: solve error, accuracy against the clip's ground truth, timings.

If the tracker or the solver fails, the demo says so loudly and builds the scene from the sample's
ground truth instead (``--ground-truth`` forces that), so the Blender side can always be seen.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample"


def _run_engine(args: list[str], log: list[str]) -> tuple[bool, float, str]:
    """Run ``python -m engine ARGS``; stream its progress; return (ok, seconds, stderr tail)."""
    cmd = [sys.executable, "-m", "engine", *args]
    log.append(" ".join(cmd))
    print("$ " + " ".join(["python", "-m", "engine", *args]), flush=True)
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    tail = "\n".join(p.stderr.strip().splitlines()[-15:])
    if p.returncode != 0:
        print(tail, file=sys.stderr)
    return p.returncode == 0, time.monotonic() - t0, tail


def score(result, gt, n_gt: int) -> dict:
    """Accuracy of ``result`` (its first ``n_gt`` tracks are the GT queries) against ``gt``."""
    from benchmarks import metrics as M

    out: dict = {}
    W, H = gt.image_size
    q = np.asarray(gt.query)
    pred_xy = np.asarray(result.tracks_2d[:n_gt], np.float64)
    pred_vis = np.asarray(result.visible[:n_gt])
    m2d = M.tapvid_metrics(q[:, 0].round().astype(int), ~np.asarray(gt.visible),
                           np.asarray(gt.tracks_2d, np.float64), ~pred_vis, pred_xy,
                           image_size=(W, H))
    out["2d"] = {k: round(float(m2d[k]), 4) for k in
                 ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")}
    rep = result.metadata.get("solve", {})
    reproj = float(rep.get("reproj_median_px", float("nan")))
    cam = M.camera_metrics(np.asarray(result.cam_to_world, np.float64),
                           np.asarray(gt.cam_to_world, np.float64),
                           np.asarray(result.K, np.float64), np.asarray(gt.K, np.float64),
                           reproj_error_px=reproj)
    out["camera"] = {k: (round(float(v), 4) if isinstance(v, (int, float, np.floating)) else v)
                     for k, v in cam.items()}
    w3 = M.world_track_metrics(np.asarray(gt.tracks_3d, np.float64), np.asarray(gt.visible),
                               np.asarray(gt.cam_to_world, np.float64), np.asarray(gt.K, np.float64),
                               np.asarray(result.tracks_3d[:n_gt], np.float64),
                               np.asarray(result.cam_to_world, np.float64),
                               q[:, 0].round().astype(int),
                               group=None if gt.group is None else np.asarray(gt.group))
    out["3d"] = {k: round(float(v), 4) for k, v in w3.items()}
    return out


def build_blend(result_path: Path, clip_path: Path, out: Path) -> dict:
    """Build and save the .blend (camera, empties, point cache, attached CG) and the preview."""
    import bpy

    tmp = Path(tempfile.mkdtemp(prefix="wt-demo-"))
    (tmp / "worldtrack").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(tmp))
    import worldtrack  # the extension package, as Blender would load it
    from worldtrack.engine.trackfile import load_trackfile
    from worldtrack.operators import build, pipeline

    bpy.ops.wm.read_factory_settings(use_empty=True)
    worldtrack.register()
    try:
        scene = bpy.context.scene
        data = load_trackfile(result_path)
        clip = bpy.data.movieclips.load(str(clip_path))
        scene.active_clip = clip
        sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
        sun.rotation_euler = (0.6, 0.2, 0.8)
        scene.collection.objects.link(sun)
        summary = pipeline.build_demo_scene(scene, clip, data, out, n_empties=24,
                                            preview_png=out / "preview.png", samples=8)
        build.write_tracking_camera(clip, data)
        blend = out / "worldtrack_demo.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
        summary["blend"] = str(blend)
        summary["timings_s"] = {k: round(v, 2) for k, v in summary["timings_s"].items()}
    finally:
        worldtrack.unregister()
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "demo_out")
    ap.add_argument("--clip", type=Path, default=SAMPLE / "clip.mp4")
    ap.add_argument("--gt", type=Path, default=SAMPLE / "gt.npz")
    ap.add_argument("--grid", type=int, default=8, help="also track every GRID-th pixel of frame 0")
    ap.add_argument("--ground-truth", action="store_true",
                    help="skip the engine and build the scene from the sample's ground truth")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from engine.trackfile import TrackFileError, load_trackfile

    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not a.clip.is_file():
        print(f"error: sample clip not found: {a.clip} (regenerate it with "
              f"samples/sample/generate.sh)", file=sys.stderr)
        return 2
    gt = load_trackfile(a.gt) if a.gt.is_file() else None
    summary: dict = {"clip": str(a.clip), "commands": [], "timings_s": {}}
    source = "engine"
    reason = ""
    n_gt = 0
    result_path = out / "solved.npz"
    if a.ground_truth:
        source, reason = "ground truth", "--ground-truth was given"
    else:
        # Queries: the sample's ground-truth queries first (to score them), then a grid.
        qs = [np.asarray(gt.query, np.float32)] if gt is not None else []
        n_gt = len(qs[0]) if qs else 0
        import cv2
        cap = cv2.VideoCapture(str(a.clip))
        W, H = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        cap.release()
        ys, xs = np.mgrid[a.grid // 2:H:a.grid, a.grid // 2:W:a.grid]
        qs.append(np.stack([np.zeros(xs.size), xs.ravel(), ys.ravel()], 1).astype(np.float32))
        qfile = out / "queries.npy"
        np.save(qfile, np.concatenate(qs))
        ok, dt, tail = _run_engine(["track", str(a.clip), "--queries", str(qfile),
                                    "--out", str(out / "tracks.npz")], summary["commands"])
        summary["timings_s"]["track"] = round(dt, 2)
        if ok:
            ok, dt, tail = _run_engine(["solve", str(out / "tracks.npz"), "--out", str(result_path)],
                                       summary["commands"])
            summary["timings_s"]["solve"] = round(dt, 2)
            if not ok:
                source, reason = "ground truth", f"the solver failed: {tail.splitlines()[-1:]}"
        else:
            source, reason = "ground truth", f"the tracker failed: {tail.splitlines()[-1:]}"
    if source == "ground truth":
        if gt is None:
            print(f"error: {reason}, and no ground truth at {a.gt} to fall back on", file=sys.stderr)
            return 1
        banner = f"NOTE: THIS DEMO USES THE SAMPLE CLIP'S GROUND TRUTH, NOT THE ENGINE ({reason})"
        print("\n" + "!" * len(banner) + "\n" + banner + "\n" + "!" * len(banner) + "\n")
        result_path = a.gt
    summary["result_source"] = source
    if reason:
        summary["note"] = reason
    try:
        result = load_trackfile(result_path)
    except TrackFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if gt is not None and source == "engine":
        summary["accuracy_vs_ground_truth"] = score(result, gt, n_gt)
    rep = result.metadata.get("solve", {})
    if rep:
        summary["solve_report"] = {k: v for k, v in rep.items() if not isinstance(v, (list, dict))}
    summary["blender"] = build_blend(result_path, a.clip.resolve(), out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n=== Worldtrack demo summary ===")
    print(json.dumps(summary, indent=2, default=str))
    if source != "engine":
        print("\n" + banner)
    print(f"\nOpen {summary['blender']['blend']} in Blender; preview: {summary['blender'].get('preview')}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
