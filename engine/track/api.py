"""Python API of the 2D tracker: :func:`track_clip` (footage -> track file) and helpers.

Coordinates: queries and results are in INPUT-resolution pixels (OpenCV convention: x right,
y down, centre of the top-left pixel = (0, 0)); frame indices ``t`` are 0-based within the
tracked frame range. Matching runs at a working resolution (``max_side``) and positions are
mapped back with :meth:`engine.decode.Footage.to_input_pixels`.

Solver feedback: ``predict(t_from, t_to, xy) -> xy_pred | None`` (input pixels, xy (M, 2)) may
be passed to move hidden points (occluded / out of frame) the way the camera solve says they
move instead of with their visible neighbours; NaN rows mean "no opinion". See
:data:`engine.track.field.Predictor`.

Colour space: ``colorspace`` tells the decoder what the footage's values mean (``auto`` |
``srgb`` | ``linear`` | ``raw``; :mod:`engine.decode.footage`). Memory: ``memory_limit_mb``
bounds the working memory (:mod:`.memory`); it changes where data lives and how much is
processed at once, never the result. Precision: ``precision`` ("auto" | "fp32" | "fp16") picks
the kernels' float precision (:func:`engine.runtime.resolve_precision`: float16 is a GPU option;
a CPU run falls back to float32 and says why; auto is float32). A kernel that runs out of
memory is retried in smaller bands and, failing that, raises
:class:`~engine.match.ops.KernelMemoryError` (a RuntimeError) saying what to lower.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from ..decode import Footage, open_footage
from ..progress import Progress, stage_of
from ..trackfile import TrackFileWriter, make_metadata
from .field import FieldSettings
from .frames import FrameStore
from .memory import MIN_BLOCK_MB, MemoryBudget, make_kernels, track_minimum_mb
from .polish import PolishStats, polish_chunk, polish_wanted
from .polish import polish as run_polish

#: Default working resolution: the longer side of the frames used for matching, px.
DEFAULT_MAX_SIDE = 640


class TrackError(ValueError):
    """Bad tracking request (queries, frames, settings)."""


def default_intrinsics(size: tuple[int, int], n_frames: int) -> np.ndarray:
    """(T, 3, 3) guess: focal 1.2 * max(W, H) px, principal point at the image centre."""
    w, h = size
    k = np.array([[1.2 * max(w, h), 0, (w - 1) / 2], [0, 1.2 * max(w, h), (h - 1) / 2],
                  [0, 0, 1]], np.float32)
    return np.repeat(k[None], n_frames, axis=0)


def make_queries(footage: Footage, queries: np.ndarray | None = None, grid: int | None = None
                 ) -> np.ndarray:
    """Validated (N, 3) float32 queries ``[t, x, y]`` in input pixels.

    ``queries`` given: checked (finite, t in range, inside the image). ``grid`` S: every S-th
    input pixel of frame 0. Neither: every working-resolution pixel of frame 0 (dense).
    """
    W, H = footage.input_size
    T = footage.n_frames
    if queries is not None:
        q = np.asarray(queries, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != 3:
            raise TrackError(f"queries must be an (N, 3) array of [t, x, y], got shape {q.shape}")
        if len(q) == 0:
            raise TrackError("queries is empty")
        bad = ~np.isfinite(q).all(axis=1)
        if bad.any():
            raise TrackError(f"{int(bad.sum())} queries contain NaN/inf (first: row "
                             f"{int(np.argmax(bad))})")
        t = q[:, 0]
        bad = (t < -0.5) | (t > T - 0.5)
        if bad.any():
            raise TrackError(f"{int(bad.sum())} queries have a frame index outside 0..{T - 1} "
                             f"(first: row {int(np.argmax(bad))}, t={t[bad][0]:g}); t is 0-based "
                             "within the tracked frame range")
        bad = (q[:, 1] < -0.5) | (q[:, 1] > W - 0.5) | (q[:, 2] < -0.5) | (q[:, 2] > H - 0.5)
        if bad.any():
            i = int(np.argmax(bad))
            raise TrackError(f"{int(bad.sum())} queries lie outside the {W}x{H} image (first: row "
                             f"{i}, x={q[i, 1]:g}, y={q[i, 2]:g})")
        q[:, 0] = np.clip(np.round(t), 0, T - 1)
        return q.astype(np.float32)
    if grid is not None:
        if int(grid) < 1:
            raise TrackError(f"grid stride must be >= 1, got {grid}")
        ys, xs = np.mgrid[0:H:int(grid), 0:W:int(grid)]
        xy = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    else:
        w, h = footage.work_size
        ys, xs = np.mgrid[0:h, 0:w]
        xy = footage.to_input_pixels(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32))
    return np.concatenate([np.zeros((len(xy), 1), np.float32), xy], 1)


def _source_hash(path: Path) -> str:
    """Cheap identity of the source: sha1 of size, mtime and the first MiB (files only)."""
    h = hashlib.sha1()
    try:
        target = path if path.is_file() else None
        if target is not None:
            st = target.stat()
            h.update(f"{st.st_size}:{int(st.st_mtime)}".encode())
            with open(target, "rb") as f:
                h.update(f.read(1 << 20))
        else:
            h.update(str(path.resolve()).encode())
    except OSError:
        h.update(str(path).encode())
    return h.hexdigest()


def _sample(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` (C, h, w) at working pixels ``xy`` (M, 2) -> (M, C)."""
    from ..match.ops import sample_points

    return sample_points(field, xy)


#: Output block budget without a memory limit, bytes.
DEFAULT_BLOCK_BYTES = 64 << 20
#: Track-file bytes per track and frame that an output block touches (tracks_2d, visible,
#: confidence).
_OUT_BYTES_PER_POINT = 13


#: Clip frames per default anchor pass / reseed pass (see ``track_clip``'s max_anchors / reseed).
WINDOW_FRAMES = 50


def _frame_block(n: int, t: int, budget: int = DEFAULT_BLOCK_BYTES) -> int:
    """Frames per output block so that a block of n tracks stays within ``budget`` bytes."""
    return int(max(1, min(t, budget // max(1, n * 16))))


def _row_chunk(n: int, t: int, budget: MemoryBudget) -> int:
    """Tracks per output chunk: all of them without a limit; with one, as many as keep the
    track-file rows they touch (all ``t`` frames of each) within a fifth of the spare memory."""
    if not budget.limited:
        return max(1, n)
    return int(max(1, min(n, budget.block_bytes(0, 0.2) // (t * _OUT_BYTES_PER_POINT))))


def track_clip(source: str | os.PathLike | Footage, out_path: str | os.PathLike,
               queries: np.ndarray | None = None, grid: int | None = None,
               frames: tuple[int | None, int | None] | None = None, device: str = "auto",
               max_side: int | None = DEFAULT_MAX_SIDE, progress: Progress | None = None,
               predict: Callable[[int, int, np.ndarray], np.ndarray | None] | None = None,
               threads: int | None = None, max_anchors: int | None = None,
               reseed: int | None = None,
               pair_flow: str = "onnx", colorspace: str = "auto",
               memory_limit_mb: int | None = None, polish: str = "auto",
               precision: str = "auto", **settings) -> Path:
    """Track points through a clip and write a track file; returns its path.

    source: video file / image folder / printf or ``#`` pattern, or an opened Footage.
    queries: (N, 3) ``[t, x, y]`` (frame index within the range, input pixels); or ``grid``
    S (every S-th input pixel of frame 0); default: every working pixel of frame 0 (dense).
    frames: inclusive source frame numbers (first, last). max_side: working resolution cap
    (None/0 = full resolution). max_anchors: most dense passes used to serve queries on
    many frames (see :mod:`.anchors`). reseed: dense mode only, how many extra passes may start
    new tracks on the frames least covered by the existing ones (disocclusions, new surface).
    They default to one per ``WINDOW_FRAMES`` and per ``WINDOW_FRAMES / 2`` frames of the clip, at
    least 8 and 2 (what a 48-frame clip gets): each pass
    covers a temporal window around its frame (it stops once its points are gone), so long
    clips are served by overlapping windows whose tracks are stitched into one file.
    pair_flow: "onnx" (the ONNX matcher) or "dis" (OpenCV DIS) for the frame-to-frame flows
    that initialise the tracker. settings: fields of :class:`FieldSettings`.
    colorspace: what the footage's values are -- ``"auto"`` (8/16-bit integers display-referred,
    float/EXR linear with a display gamma: the historical guess), ``"srgb"`` (display-encoded,
    used as they are), ``"linear"`` (scene-linear: the sRGB OETF is applied) or ``"raw"``
    (non-colour data, normalised); ignored when ``source`` is an opened Footage (it has its own).
    memory_limit_mb: working-memory limit in MiB (None: unlimited, the historical block sizes);
    with a limit, block/cache sizes follow it, per-clip data is paged from disk and a limit
    below what the working resolution needs fails at once (:class:`~.memory.MemoryLimitError`,
    which says how much is needed). Results are identical with and without a limit.
    precision: "auto" (float32), "fp32" or "fp16" (GPU only; elsewhere float32 with a message);
    the precision used is recorded in the file's ``engine.settings.precision``.
    polish: "auto" | "on" | "off" -- re-align each track on the full-resolution frames against
    its query-frame template (:mod:`.polish`); auto: when the working resolution is below the
    input's and there are at most ``polish.AUTO_MAX_TRACKS`` tracks.
    Output: tracks_2d / visible / confidence in input pixels; tracks_3d NaN, cameras
    identity and K a default guess (the solve stage fills those in).
    Raises DecodeError / TrackError on bad input; Cancelled when ``progress`` is cancelled
    (no output file is left behind).
    """
    from ..runtime import resolve_precision, select_providers

    t_start = time.monotonic()
    budget = MemoryBudget(memory_limit_mb)
    footage = source if isinstance(source, Footage) else open_footage(
        source, frames=frames, max_side=max_side or None, colorspace=colorspace)
    need = track_minimum_mb(footage.work_size, footage.decode_bytes)
    budget.require(need, f"tracking at {footage.work_size[0]}x{footage.work_size[1]} working "
                         "resolution", "Lower the Working Resolution (--max-side) or raise the "
                         "memory limit.")
    budget.fixed_mb = need - MIN_BLOCK_MB
    if footage.n_frames < 2:
        raise TrackError(f"{footage.path}: {footage.n_frames} frame(s) in range; tracking needs "
                         "at least 2")
    unknown = set(settings) - set(FieldSettings.__dataclass_fields__)
    if unknown:
        raise TrackError(f"unknown tracker settings: {', '.join(sorted(unknown))}")
    if pair_flow not in ("onnx", "dis"):
        raise TrackError(f"pair_flow must be 'onnx' or 'dis', got {pair_flow!r}")
    if max_anchors is not None and max_anchors < 1:
        raise TrackError(f"max_anchors must be >= 1, got {max_anchors}")
    cfg = FieldSettings(**settings)
    q = make_queries(footage, queries, grid)
    dense = queries is None and grid is None
    T = footage.n_frames
    _, dev_msg = select_providers(device)
    try:
        kprec, prec_msg = resolve_precision(precision, device)
    except ValueError as e:
        raise TrackError(str(e)) from None
    if progress is not None:
        progress.message(f"onnxruntime: {dev_msg}")
        progress.message(prec_msg)
    out_path = Path(out_path)
    scratch = Path(tempfile.mkdtemp(prefix=".wt-track-", dir=out_path.parent
                                    if out_path.parent.exists() else None))
    kernels = make_kernels(device, threads, budget, kprec,
                           progress.message if progress is not None else None)
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        with FrameStore(footage, kernels, scratch, progress, pair_flow=pair_flow,
                        budget=budget) as store:
            timings["decode"] = time.monotonic() - t0
            t0 = time.monotonic()
            md = make_metadata(footage.input_size, footage.frame_range, footage.fps,
                               source={"path": str(footage.path),
                                       "hash": _source_hash(footage.path)})
            md["engine"]["settings"] = {"max_side": max_side, "work_size": list(footage.work_size),
                                        "device": device, "precision": kprec,
                                        "grid": grid, "pair_flow": pair_flow,
                                        "dense": dense, "colorspace": footage.colorspace,
                                        **{k: v for k, v in asdict(cfg).items() if k != "extra"}}
            q, assign, u, anchors, fallback = _plan_and_run(
                store, footage, q, dense, cfg, predict, progress, scratch, max_anchors, reseed)
            timings["track"] = time.monotonic() - t0
            budget.trim()
            md["engine"]["settings"]["anchors"] = sorted(int(a) for a in anchors)
            md["engine"]["settings"]["anchor_windows"] = [list(anchors[a].span)
                                                          for a in sorted(anchors)]
            if fallback.any() and progress is not None:
                progress.message(f"{int(fallback.sum())} queries are not seen from any anchor "
                                 "frame; tracked best-effort at half confidence")
            t0 = time.monotonic()
            with TrackFileWriter(out_path, len(q), T, md, scratch_dir=scratch) as wr:
                wr["query"][:] = q
                wr["K"][:] = default_intrinsics(footage.input_size, T)
                _write(wr, footage, q, assign, u, anchors, fallback, store,
                       progress.check if progress is not None else None, budget)
                timings["write"] = time.monotonic() - t0
                if polish_wanted(polish, footage, len(q)):
                    t0 = time.monotonic()
                    wr.metadata["engine"]["settings"]["polish"] = _polish(
                        wr, footage, q, progress, budget).as_dict()
                    timings["polish"] = time.monotonic() - t0
                timings["total"] = time.monotonic() - t_start
                wr.metadata["timings"] = timings
        return out_path
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _plan_and_run(store: FrameStore, footage: Footage, q: np.ndarray, dense: bool,
                  cfg: FieldSettings, predict, progress: Progress | None, scratch: Path,
                  max_anchors: int, reseed: int):
    """Run anchor passes until every query is served (see :mod:`.anchors`).

    Returns (queries (N', 3) -- dense mode may add tracks that start on later frames --,
    anchor index per query, anchor-grid coords per query (N', 2), anchors dict, fallback mask).
    """
    from .anchors import AnchorField

    T = store.T
    tq = np.round(q[:, 0]).astype(int)
    wxy = footage.to_work_pixels(q[:, 1:])
    assign = np.full(len(q), -1)
    u = np.zeros((len(q), 2), np.float32)
    anchors: dict[int, AnchorField] = {}
    pred_work = _wrap_predict(predict, footage)
    check = progress.check if progress is not None else None
    stage = stage_of(progress, "track", T)
    stage.__enter__()

    def add_anchor(a: int) -> AnchorField:
        if anchors:
            stage.total += T
        f = AnchorField(store, a, scratch)
        f.run(store, cfg, pred_work, check, stage.advance)
        anchors[a] = f
        return f

    windows = -(-T // WINDOW_FRAMES)
    max_anchors = max(8, windows) if max_anchors is None else max_anchors
    reseed = max(2, -(-T // (WINDOW_FRAMES // 2))) if reseed is None else reseed
    while (assign < 0).any() and len(anchors) < max_anchors:
        todo = np.nonzero(assign < 0)[0]
        frames, counts = np.unique(tq[todo], return_counts=True)
        a = int(frames[np.argmax(counts)])
        f = add_anchor(a)
        at_a = todo[tq[todo] == a]
        assign[at_a], u[at_a] = a, wxy[at_a]
        for t in np.unique(tq[todo]):
            sel = todo[(tq[todo] == t) & (assign[todo] < 0)]
            if len(sel):
                uu, ok = f.invert(int(t), wxy[sel])
                assign[sel[ok]], u[sel[ok]] = a, uu[ok]
    fallback = assign < 0
    for i in np.nonzero(fallback)[0]:
        # no anchor sees this point at its query frame: the closest anchor in time whose window
        # holds that frame (else the closest), best effort
        a = min(anchors, key=lambda k: (not anchors[k].in_span(int(tq[i])), abs(k - tq[i])))
        uu, _ = anchors[a].invert(int(tq[i]), wxy[i:i + 1], tol=np.inf)
        assign[i], u[i] = a, uu[0]
    extra_q = []
    if dense:
        coverage = _Coverage(anchors, store)
        for _ in range(reseed):
            t_new, pix = coverage.least_covered()
            if t_new is None or t_new in anchors:
                break
            coverage.added(add_anchor(t_new))
            xy = pix.astype(np.float32)
            extra_q.append((t_new, xy))
    stage.__exit__(None, None, None)
    if extra_q:
        qs, us, ass = [q], [u], [assign]
        for t_new, xy in extra_q:
            qs.append(np.concatenate([np.full((len(xy), 1), t_new, np.float32),
                                      footage.to_input_pixels(xy)], 1))
            us.append(xy)
            ass.append(np.full(len(xy), t_new))
        q, u, assign = np.concatenate(qs), np.concatenate(us), np.concatenate(ass)
        fallback = np.concatenate([fallback, np.zeros(len(q) - len(fallback), bool)])
    return q, assign, u, anchors, fallback


class _Coverage:
    """Per frame, how many working pixels no visible track covers (within 1 px). Recomputed only
    over the window of each new anchor, so reseeding a long clip stays linear in its length."""

    def __init__(self, anchors, store: FrameStore):
        self.anchors, self.store = anchors, store
        self.uncovered = np.full(store.T, -1, np.int64)      # -1: not computed yet

    def mask(self, t: int) -> np.ndarray:
        """(h, w) bool: pixels of frame t that no visible track reaches."""
        import cv2

        h, w = self.store.h, self.store.w
        cov = np.zeros((h, w), np.uint8)
        for f in self.anchors.values():
            if not f.in_span(t):
                continue
            d = np.asarray(f.data[t])
            vis = d[2] > 0.5
            px = np.round(d[0][vis]).astype(int)
            py = np.round(d[1][vis]).astype(int)
            ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            cov[py[ok], px[ok]] = 1
            f.release()
        return cv2.dilate(cov, np.ones((3, 3), np.uint8)) == 0

    def added(self, f) -> None:
        self.uncovered[f.span[0]:f.span[1]] = -1

    def least_covered(self, min_fraction: float = 0.03):
        """The frame least covered by visible tracks and its uncovered pixels (K, 2) [x, y];
        (None, None) when every frame is covered to within ``min_fraction``."""
        for t in np.flatnonzero(self.uncovered < 0):
            self.uncovered[t] = int(self.mask(int(t)).sum())
        t = int(np.argmax(self.uncovered))
        if self.uncovered[t] <= min_fraction * self.store.h * self.store.w:
            return None, None
        ys, xs = np.nonzero(self.mask(t))
        return t, np.stack([xs, ys], 1)


def _write(wr: TrackFileWriter, footage: Footage, q: np.ndarray, assign: np.ndarray,
           u: np.ndarray, anchors, fallback: np.ndarray, store: FrameStore,
           check=None, budget: MemoryBudget | None = None) -> None:
    """Sample each anchor's stored field at its queries' grid coords, in blocks of frames (and,
    with a memory limit, chunks of tracks: see :func:`_row_chunk`)."""
    budget = budget or MemoryBudget()
    T = store.T
    tq = np.round(q[:, 0]).astype(int)
    wxy = footage.to_work_pixels(q[:, 1:])
    colors = wr.add("colors")
    for t in np.unique(tq):
        sel = np.nonzero(tq == t)[0]
        rgb = _sample(np.asarray(store.rgb[t], np.float32).transpose(2, 0, 1), wxy[sel])
        colors[sel] = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
        store.release()
    for a, f in anchors.items():
        idx_all = np.nonzero(assign == a)[0]
        if not len(idx_all):
            continue
        rows = _row_chunk(len(idx_all), T, budget)
        for r0 in range(0, len(idx_all), rows):
            idx = idx_all[r0:r0 + rows]
            contiguous = idx[-1] - idx[0] + 1 == len(idx)
            sel = slice(idx[0], idx[-1] + 1) if contiguous else idx
            block = _frame_block(len(idx), T, budget.block_bytes(DEFAULT_BLOCK_BYTES, 0.2))
            for t0 in range(0, T, block):
                if check is not None:
                    check()
                t1 = min(T, t0 + block)
                a_ = f.sample(u[idx], t0, t1)
                pos = footage.to_input_pixels(a_[..., :2])
                vis = a_[..., 2] > 0.5
                conf = np.clip(a_[..., 3], 0.0, 1.0) * np.where(fallback[idx], 0.5, 1.0)[:, None]
                at_q = (tq[idx][:, None] == np.arange(t0, t1)[None])   # query frame is exact
                pos[at_q] = q[idx][:, 1:][np.nonzero(at_q)[0]]
                vis[at_q] = True
                conf[at_q] = 1.0
                wr["tracks_2d"][sel, t0:t1] = pos
                wr["visible"][sel, t0:t1] = vis
                wr["confidence"][sel, t0:t1] = conf.astype(np.float32)
                del a_, pos, vis, conf, at_q
                wr.release()    # one block resident, limit or not: the file can be GBs


def _polish(wr: TrackFileWriter, footage: Footage, q: np.ndarray, progress: Progress | None,
            budget: MemoryBudget) -> PolishStats:
    """Full-resolution polish of the written tracks, one block of frames at a time."""
    def tracks(rows: slice, t0: int, t1: int):
        return wr["tracks_2d"][rows, t0:t1], wr["visible"][rows, t0:t1]

    def write(rows: slice, t0: int, t1: int, xy: np.ndarray, vis: np.ndarray) -> None:
        wr["tracks_2d"][rows, t0:t1] = xy
        wr["visible"][rows, t0:t1] = vis
        wr.release()

    chunks = -(-len(q) // polish_chunk(footage, len(q), budget))
    # per chunk of tracks, two passes over the frames: templates, then alignment
    with stage_of(progress, "polish", 2 * chunks * footage.n_frames) as st:
        return run_polish(footage, q, tracks, write, budget, st.advance)


def _wrap_predict(predict, footage: Footage):
    """Adapt an input-pixel ``predict`` hook to the working resolution used by the field."""
    if predict is None:
        return None

    def wrapped(t_from: int, t_to: int, xy_work: np.ndarray):
        got = predict(t_from, t_to, footage.to_input_pixels(xy_work))
        if got is None:
            return None
        return footage.to_work_pixels(np.asarray(got, np.float32))

    return wrapped
