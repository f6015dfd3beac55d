"""``python -m engine track``: dense 2D tracking of a clip into a track file.

    python -m engine track INPUT --out tracks.npz [--queries Q.npy | --grid STRIDE]
        [--frames A:B] [--device auto|cuda|cpu|torch-cuda|torch-cpu] [--max-side PX] [--progress auto|bar|lines|quiet]
        [--threads N] [--pair-flow onnx|dis] [--max-anchors N]
        [--colorspace auto|srgb|linear|raw] [--memory-limit MIB] [--precision auto|fp32|fp16]

Exit codes: 0 ok, 2 bad input, a memory limit too small for the working resolution, or a
kernel out of memory even in its smallest bands (clear one-line message on stderr; no output
file), 130 cancelled (Ctrl-C; no output file).
"""
from __future__ import annotations

import argparse
import sys


def memory_limit_arg(text: str) -> int:
    """argparse type of ``--memory-limit``: a positive whole number of MiB."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of MiB, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of MiB, got {v}")
    return v


def register(subparsers) -> argparse.ArgumentParser:
    from ..decode import COLORSPACES
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
    p.add_argument("--device", choices=("auto", "cuda", "cpu", "torch-cuda", "torch-cpu"),
                   default="auto",
                   help="auto: CUDA when onnxruntime has a working CUDA provider, else CPU. "
                        "torch-cuda / torch-cpu run the kernels' torch source instead of the "
                        "ONNX graphs (needs torch; for measuring on a GPU machine whose "
                        "onnxruntime lacks CUDA)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PX",
                   help="working resolution: longer side in px (0 = full input resolution; "
                        "default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--pair-flow", choices=("onnx", "dis"), default="onnx",
                   help="frame-to-frame flow that initialises the tracker: the ONNX matcher "
                        "(default) or OpenCV DIS (often better on very noisy footage)")
    p.add_argument("--max-anchors", type=int, default=None,
                   help="most dense passes used to serve queries on many frames (default: one "
                        "per 50 frames, at least 8; each covers a temporal window around its "
                        "frame)")
    p.add_argument("--colorspace", choices=COLORSPACES, default="auto",
                   help="what the footage's values are: auto (default; 8/16-bit as display-"
                        "referred, float/EXR as linear with a display gamma 2.2), srgb "
                        "(display-encoded: used as they are, float clipped to 0..1), linear "
                        "(scene-linear light: the sRGB transfer curve is applied first; 8/16-bit "
                        "and float alike) or raw (non-colour data: no curve, normalised to "
                        "0..1 -- integers by their type's range, float by the first frame's "
                        "0.5..99.5 percentile range)")
    p.add_argument("--memory-limit", type=memory_limit_arg, default=None, metavar="MIB",
                   help="working-memory limit in MiB (default: none). Block and cache sizes "
                        "follow it and per-clip data is paged from disk; the tracks are the "
                        "same as without a limit. Fails at once, saying how much is needed, "
                        "when the working resolution does not fit")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16"), default="auto",
                   help="float precision of the per-pixel kernels: fp16 holds their bulky "
                        "intermediates (descriptor differences, cost volumes) in float16 on a "
                        "GPU (coordinates stay float32); on the CPU onnxruntime has no float16 "
                        "kernels for them, so fp16 runs float32 there and says so. auto "
                        "(default): fp32")
    p.add_argument("--polish", choices=("auto", "on", "off"), default="auto",
                   help="re-align each track on the full-resolution frames against its "
                        "query-frame template for sub-pixel accuracy at the input resolution "
                        "(auto, the default: when --max-side downscales the footage and there "
                        "are at most 40,000 tracks)")
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
                         pair_flow=args.pair_flow, max_anchors=args.max_anchors,
                         colorspace=args.colorspace, memory_limit_mb=args.memory_limit,
                         precision=args.precision, polish=args.polish)
    except (DecodeError, TrackError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("cancelled; no track file written", file=sys.stderr)
        return 130
    print(out)
    return 0
