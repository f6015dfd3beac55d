"""``python -m engine solve``: camera solve and world-centric 3D for a track file."""
from __future__ import annotations

import argparse
import json
import sys


def memory_limit_arg(text: str) -> int:
    """argparse type of ``--memory-limit`` (shared with ``engine track``)."""
    from ..track.cli import memory_limit_arg as parse

    return parse(text)


def register(subparsers) -> None:
    """Add the ``solve`` subcommand to ``python -m engine``'s subparsers."""
    p = subparsers.add_parser(
        "solve", help="solve the camera (path, focal, distortion) and lift every track to 3D",
        description="Solve camera path and lens from a track file and write world-centric 3D "
                    "for every track (static points, rigid moving groups, non-rigid paths).")
    p.add_argument("tracks", help="input track file (.npz) from `python -m engine track`")
    p.add_argument("--out", required=True, help="output track file (may equal the input)")
    lens = p.add_mutually_exclusive_group()
    lens.add_argument("--focal", type=float, metavar="PX", help="known focal length in pixels")
    lens.add_argument("--focal-mm", type=float, metavar="MM",
                      help="known focal length in millimetres (needs --sensor-width)")
    p.add_argument("--sensor-width", type=float, metavar="MM", help="sensor width in millimetres")
    p.add_argument("--zoom", action="store_true", help="the focal length changes (solve per frame)")
    p.add_argument("--distortion", choices=["none", "k1", "k1k2"], default="none",
                   help="radial lens distortion to solve (Blender polynomial model)")
    p.add_argument("--principal-point", default="auto", metavar="auto|centre|X,Y",
                   help="principal point: auto (default: solved when the footage pins it, "
                        "else the image centre; the report says which and why), centre, or a "
                        "known X,Y in input pixels (OpenCV: the top-left pixel's centre is 0,0, "
                        "the image centre is (W-1)/2,(H-1)/2)")
    p.add_argument("--no-refine", action="store_true",
                   help="do not feed the solved geometry back into the 2D tracks (keep the "
                        "tracker's 2D, visibility and confidence as they are)")
    p.add_argument("--clip", metavar="PATH",
                   help="the footage, for the refinement's appearance checks (default: the "
                        "source path recorded in the track file)")
    p.add_argument("--refine-rounds", type=int, default=None, metavar="N",
                   help="most re-solves on refined tracks (default 2; 0 = refine once)")
    p.add_argument("--progress", choices=["auto", "bar", "lines", "quiet"], default="auto")
    p.add_argument("--report", metavar="JSON", help="also write the solve report to this file")
    p.add_argument("--memory-limit", type=memory_limit_arg, default=None, metavar="MIB",
                   help="working-memory limit in MiB for the refinement (default: none): chunk "
                        "sizes follow it and per-track work arrays go to disk when they would "
                        "not fit; the result is the same (to float rounding). Fails at once, "
                        "saying how much is "
                        "needed, when it is too small")
    p.set_defaults(func=_run)


def _apply_memory_limit(args: argparse.Namespace) -> str | None:
    """Make ``--memory-limit`` the process-wide limit; an error message when it cannot fit."""
    from ..refine import check_memory_limit
    from ..track.memory import MemoryLimitError, set_process_limit
    from ..trackfile import TrackFileError

    if args.memory_limit is None:
        return None
    try:
        check_memory_limit(args.memory_limit, args.tracks, args.clip, refine=not args.no_refine)
    except (TrackFileError, MemoryLimitError) as e:
        return str(e)
    set_process_limit(args.memory_limit)
    return None


def _run(args: argparse.Namespace) -> int:
    from ..progress import Cancelled, Progress
    from ..trackfile import TrackFileError, load_trackfile
    from . import focal_px_from_mm, solve_trackfile
    from .pipeline import SolveError
    from .principal_point import parse_principal_point

    err = _apply_memory_limit(args)
    if err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    focal = args.focal
    if args.focal_mm is not None or args.sensor_width is not None:
        if args.focal_mm is None or args.sensor_width is None:
            print("error: --focal-mm and --sensor-width go together", file=sys.stderr)
            return 2
        try:
            w = load_trackfile(args.tracks, check=False).image_size[0]
            focal = focal_px_from_mm(args.focal_mm, args.sensor_width, w)
        except (TrackFileError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if focal is not None and focal <= 0:
        print("error: --focal must be positive", file=sys.stderr)
        return 2
    try:
        pp = parse_principal_point(args.principal_point)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = Progress(args.progress)
    try:
        report = solve_trackfile(args.tracks, args.out, focal=focal, zoom=args.zoom,
                                 distortion=args.distortion, progress=progress,
                                 refine=not args.no_refine, clip=args.clip,
                                 max_rounds=args.refine_rounds, principal_point=pp)
    except TrackFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SolveError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.report:
            with open(args.report, "w") as fh:
                json.dump(e.report, fh, indent=2, default=str)
        return 3
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(report, fh, indent=2)
    lift = report.get("lift", {})
    # the output's final labels (the groups' counts; the rest is static background)
    moving = sum(int(g.get("n_tracks", 0)) for g in lift.get("groups", []))
    print(f"solved {args.out}: {report['mode']} shot, focal {report['focal_px']:.1f} px"
          f"{' (zoom)' if report.get('zoom') else ''}, reprojection median "
          f"{report['reproj_median_px']:.3f} px, {report['n_tracks'] - moving} static / "
          f"{moving} moving tracks, "
          f"{sum(1 for g in lift.get('groups', []) if g['kind'] == 'rigid')} rigid group(s)")
    if "principal_point" in report:
        ppx, ppy = report["principal_point"]
        print(f"principal point ({ppx:.2f}, {ppy:.2f}) px: "
              f"{report.get('principal_point_reason', '')}")
    ref = report.get("refine")
    if ref:
        fin = ref["final"]
        print(f"refined: {fin['n_static']} static ({fin.get('n_static_by_appearance', 0)} of them "
              f"found by appearance) + {fin['n_rigid']} rigid-group tracks follow the geometry, "
              f"{fin['n_tracker_kept']} keep the tracker's 2D; "
              f"{sum('skipped' not in e for e in ref['rounds'])} round(s), kept round "
              f"{ref['kept_round']}; visibility: {fin['visibility']}")
        for e in ref["rounds"]:
            if "skipped" in e:
                print(f"refine round {e['round']}: {e['skipped']}")
    for wmsg in report.get("warnings", []):
        print(f"warning: {wmsg}", file=sys.stderr)
    return 0
