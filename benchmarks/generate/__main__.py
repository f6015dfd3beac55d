"""CLI: ``python -m benchmarks.generate --kind dynamic --seed 0 --size 320x240 --frames 48 --out DIR``,
``python -m benchmarks.generate --suite quick|full|effects --out ROOT`` or
``python -m benchmarks.generate --check DIR`` (re-run the self-check of a clip rendered with depth)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    from .suite import KINDS, SUITES

    ap = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=(
        "Render ground-truth clips with Blender/Cycles: frames/*.png, clip.mp4, gt.npz."))
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--kind", choices=KINDS, help="render one clip of this kind into --out")
    what.add_argument("--suite", choices=SUITES, help="render a whole suite into --out/<kind>_<seed>/")
    what.add_argument("--check", type=Path, metavar="DIR",
                      help="re-run the self-check on DIR/gt.npz (needs depth); exit 1 if it fails")
    ap.add_argument("--out", type=Path, help="clip folder (or suite root)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=_size, default=(320, 240), help="WxH (even), default 320x240")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--motion-blur", action="store_true")
    ap.add_argument("--noise", type=float, default=0.0, help="sensor noise std, fraction of full scale")
    ap.add_argument("--exposure-change", action="store_true")
    ap.add_argument("--queries", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    ap.add_argument("--no-depth", action="store_true", help="do not store depth maps in gt.npz")
    ap.add_argument("--force", action="store_true", help="suite: re-render cached clips too")
    a = ap.parse_args(argv)
    if a.check:
        from engine.trackfile import load_trackfile

        from .selfcheck import self_check

        report = self_check(load_trackfile(a.check / "gt.npz"))
        print(json.dumps(report.as_dict(), indent=1))
        return 0 if report.ok else 1
    if a.out is None:
        ap.error("--out is required with --kind or --suite")

    from . import generate_clip
    from .suite import render_suite

    if a.suite:
        render_suite(a.out, a.suite, force=a.force)
        return 0
    t0 = time.perf_counter()
    generate_clip(a.out, a.kind, a.seed, a.size[0], a.size[1], a.frames, a.fps, a.motion_blur,
                  a.noise, a.exposure_change, a.queries, a.samples, not a.no_depth)
    from engine.trackfile import load_trackfile

    md = load_trackfile(a.out / "gt.npz").metadata
    print(json.dumps({"out": str(a.out), "seconds": round(time.perf_counter() - t0, 2),
                      "render_seconds_per_frame": round(md["generator"]["render_seconds_per_frame"], 3),
                      "dynamic_groups": md["dynamic_groups"], "self_check": md["self_check"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
