"""``python -m engine``: the Worldtrack engine's command line.

Subcommands: ``track`` (dense 2D tracking, engine.track), ``solve`` (camera + 3D, engine.solve),
``info`` / ``validate`` (inspect a track file), ``version``.
"""
from __future__ import annotations

import argparse
import json
import sys

if __name__ == "__main__":
    # before anything imports numpy: BLAS reads its thread count once, when it loads
    from .parallel import single_threaded_blas

    single_threaded_blas()


def _cmd_info(args: argparse.Namespace) -> int:
    from .trackfile import TrackFileError, load_trackfile

    try:
        data = load_trackfile(args.path, check=not args.no_check)
    except TrackFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {
        "tracks": data.n_tracks, "frames": data.n_frames, "image_size": list(data.image_size),
        "arrays": {k: f"{v.dtype} {tuple(v.shape)}" for k, v in data.arrays().items()},
        "metadata": data.metadata,
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .trackfile import TrackFileError, load_trackfile

    try:
        data = load_trackfile(args.path)
    except TrackFileError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 2
    print(f"ok: {data.n_tracks} tracks x {data.n_frames} frames, version {data.metadata['version']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"worldtrack-engine {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for modname in ("track", "solve"):
        try:
            mod = __import__(f"{__package__}.{modname}.cli", fromlist=["register"])
        except ImportError as e:  # a stage that is not built yet must not break the others
            s = sub.add_parser(modname, help=f"(unavailable: {e})")
            s.set_defaults(func=lambda a, _e=e: (print(f"error: {_e}", file=sys.stderr), 2)[1])
            continue
        mod.register(sub)
    s = sub.add_parser("info", help="print a track file's shapes and metadata as JSON")
    s.add_argument("path")
    s.add_argument("--no-check", action="store_true", help="do not validate the contract")
    s.set_defaults(func=_cmd_info)
    s = sub.add_parser("validate", help="check a track file against the contract")
    s.add_argument("path")
    s.set_defaults(func=_cmd_validate)
    return p


def _terminate(signum, frame) -> None:
    """SIGTERM (Blender's Cancel, ``kill``) stops like Ctrl-C: the work in progress is dropped,
    no output file is left, exit 130."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
