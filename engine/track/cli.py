"""``python -m engine track``: dense 2D tracking of a clip into a track file.

    python -m engine track INPUT --out tracks.npz [--queries Q.npy | --grid STRIDE]
        [--frames A:B] [--device auto|cuda|cpu] [--max-side PX] [--progress auto|bar|lines|quiet]
        [--threads N] [--pair-flow onnx|dis] [--max-anchors N]

Exit codes: 0 ok, 2 bad input (clear message on stderr), 130 cancelled (Ctrl-C; no output file).
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> argparse.ArgumentParser:
    from .api import DEFAULT_MAX_SIDE

    p = subparsers.add_parser(
        "track", help="track points (default: every pixel of frame 0) through a clip",
        description="Dense, long-range, occlusion-aware 2D tracking. Writes a Worldtrack track "
                    "file (tracks_2d/visible/confidence in input pixels; 3D left for `solve`).")
    p.add_argument("input", help="video file, image folder, or sequence pattern "
                                 "(frame_%%04d.png or frame_####.png)")
    p.add_argument("--out", required=True, help="output track file (.npz)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--queries", help="Q.npy: float (N, 3) [t, x, y]; t = 0-based frame index in "
                                     "the tracked range, x, y in input pixels (OpenCV)")
    g.add_argument("--grid", type=int, metavar="STRIDE",
                   help="track every STRIDE-th input pixel of frame 0 (default: every working "
                        "pixel)")
    p.add_argument("--frames", metavar="A:B", help="inclusive source frame range (A:, :B allowed)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PX",
                   help="working resolution: longer side in px (0 = full input resolution; "
                        "default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--pair-flow", choices=("onnx", "dis"), default="onnx",
                   help="frame-to-frame flow that initialises the tracker: the ONNX matcher "
                        "(default) or OpenCV DIS (often better on very noisy footage)")
    p.add_argument("--max-anchors", type=int, default=8,
                   help="most dense passes used to serve queries on many frames")
    p.add_argument("--progress", choices=("auto", "bar", "lines", "quiet"), default="auto")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..decode import DecodeError, parse_frame_range
    from ..progress import Cancelled, Progress
    from .api import TrackError, track_clip

    progress = Progress(mode=args.progress)
    try:
        queries = None
        if args.queries:
            try:
                queries = np.load(args.queries, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise TrackError(f"cannot read queries {args.queries}: {e}") from None
        out = track_clip(args.input, args.out, queries=queries, grid=args.grid,
                         frames=parse_frame_range(args.frames), device=args.device,
                         max_side=args.max_side or None, progress=progress, threads=args.threads,
                         pair_flow=args.pair_flow, max_anchors=args.max_anchors)
    except (DecodeError, TrackError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("cancelled; no track file written", file=sys.stderr)
        return 130
    print(out)
    return 0
