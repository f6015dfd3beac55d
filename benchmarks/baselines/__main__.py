"""``python -m benchmarks.baselines METHOD CLIP_DIR --queries Q.npy --out X.npz [--focal PX]
[--no-solve]``."""
from __future__ import annotations

import argparse
import importlib
import sys
import time

import numpy as np

from . import METHODS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__)
    ap.add_argument("method", choices=sorted(METHODS))
    ap.add_argument("clip", help="clip folder (frames/00000.png … or an .mp4)")
    ap.add_argument("--queries", required=True, help="(N, 3) float32 [t, x, y] .npy")
    ap.add_argument("--out", required=True, help="output track file (.npz)")
    ap.add_argument("--focal", type=float, default=None, help="true focal length in pixels, if given")
    ap.add_argument("--no-solve", action="store_true",
                    help="camera methods: track the queries only (footage without camera truth)")
    a = ap.parse_args(argv)
    q = np.load(a.queries).astype(np.float32)
    if q.ndim != 2 or q.shape[1] != 3:
        print(f"error: queries must be (N, 3) [t, x, y], got {q.shape}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    mod = importlib.import_module(METHODS[a.method])
    out = mod.run(a.clip, q, a.out, focal=a.focal, solve=not a.no_solve)
    print(f"{a.method}: wrote {out} in {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
