"""numpy glue around the ONNX matching kernels (run by onnxruntime; torch not needed).

Arrays are channel-first float32 at one pyramid level's resolution: descriptors (C, h, w),
flows / positions (2, h, w) with channel 0 = x, 1 = y, in that level's pixels (OpenCV
convention). Level 0 is the working resolution; level l is downscaled by cv2.pyrDown l times.

Out of memory: every kernel is per-pixel with a small footprint, so a call that fails to
allocate (a full GPU, or ONNX Runtime's capped arena) is retried on horizontal bands of the
image -- half the rows, then a quarter, ... down to ``MIN_BAND_ROWS`` -- each band padded with
the kernel's halo (the rows its footprint reaches) so that the result is the same as one call
(bit for bit but for float rounding of flows shifted into the band's frame). The band height
that worked is kept for that kernel's later calls. When even ``MIN_BAND_ROWS`` fails,
:class:`KernelMemoryError` says what to lower.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runtime import TORCH_DEVICES, get_session

ONNX_DIR = Path(__file__).resolve().parent / "onnx"
MIN_LEVEL_SIDE = 20
#: The kernel graphs :class:`Kernels` runs (``ONNX_DIR / f"{name}.onnx"``).
KERNEL_NAMES = ("features", "match", "score", "warp", "lk")
#: Kernels with a float16 variant ``<name>_fp16.onnx`` (float32 inputs and outputs; see
#: :mod:`.kernels_torch`); the others run float32 at any precision.
FP16_KERNEL_NAMES = ("features", "match", "score")
#: Smallest band (rows) an out-of-memory kernel call is split into before giving up.
MIN_BAND_ROWS = 8


class KernelMemoryError(RuntimeError):
    """A kernel ran out of memory even on the smallest bands (one line, with what to lower)."""


#: Lower-cased message fragments of allocation failures: ONNX Runtime's BFC arena (CPU with a
#: cap, and CUDA), CUDA itself (error 2 = cudaErrorMemoryAllocation), cuBLAS/cuDNN, C++.
_OOM_TEXT = ("failed to allocate memory", "out of memory", "is smaller than requested bytes",
             "cudaerrormemoryallocation", "cuda error 2", "cuda failure 2:",
             "cublas_status_alloc_failed", "cudnn_status_alloc_failed", "bad_alloc",
             "bad allocation")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: Python's MemoryError, torch's
    ``OutOfMemoryError``, or an onnxruntime exception (its own types, not RuntimeError) whose
    message says it could not allocate."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    msg = str(exc).lower()
    return any(t in msg for t in _OOM_TEXT)


def _oom_detail(exc: BaseException) -> str:
    """The useful end of an allocation failure's message, on one line."""
    msg = " ".join(str(exc).split())
    for key in ("Available memory", "Failed to allocate", "out of memory", "CUDA"):
        i = msg.find(key)
        if i >= 0:
            msg = msg[i:]
            break
    return msg[:160]


@dataclass(frozen=True)
class _Bands:
    """How a kernel splits into row bands: the inputs cut (all (1, C, H, W) with the same H;
    the outputs are cut the same way), the halo rows its footprint needs on each side, and the
    input / outputs that are flows relative to the band's own pixel grid (their y is shifted
    by the band's first row)."""

    inputs: tuple[str, ...]
    halo: int
    flow_in: str | None = None
    flow_out: tuple[int, ...] = ()


#: Footprints: features 3x3 blur + ring of radius 2; match +-3 shifts + 5x5 aggregation; score
#: 3x3 aggregation; lk 5x5 blur, 7x7 windows nested three deep, two iterations (< 32 rows,
#: tested); warp is pointwise.
_BANDS = {
    "features": _Bands(("image",), 4),
    "match": _Bands(("ref", "flow"), 8, "flow", (0,)),
    "score": _Bands(("ref_a", "ref_b", "flow"), 2, "flow"),
    "lk": _Bands(("ref", "flow"), 32, "flow", (0,)),
    "warp": _Bands(("coords",), 0),
}


def n_levels(h: int, w: int, max_levels: int = 5) -> int:
    """Pyramid depth such that the coarsest level's shorter side is >= MIN_LEVEL_SIDE."""
    n = 1
    while n < max_levels and min(h, w) / 2 ** n >= MIN_LEVEL_SIDE:
        n += 1
    return n


def resize_flow(flow: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resample a (2, h0, w0) displacement field to (2, h, w), rescaling its values."""
    import cv2

    h0, w0 = flow.shape[1:]
    if (h0, w0) == (h, w):
        return flow
    interp = cv2.INTER_LINEAR if h > h0 else cv2.INTER_AREA
    out = np.empty((2, h, w), np.float32)
    out[0] = cv2.resize(flow[0], (w, h), interpolation=interp) * (w / w0)
    out[1] = cv2.resize(flow[1], (w, h), interpolation=interp) * (h / h0)
    return out


def median_flow(flow: np.ndarray, k: int = 5) -> np.ndarray:
    """Edge-preserving 5x5 median of each flow channel (removes isolated mismatches)."""
    import cv2

    return np.stack([cv2.medianBlur(np.ascontiguousarray(c), k) for c in flow])


def graph_path(name: str, precision: str = "fp32") -> Path:
    """The committed graph of kernel ``name`` at ``precision`` ("fp32" | "fp16"; kernels without
    a float16 variant use their float32 graph)."""
    if precision == "fp16" and name in FP16_KERNEL_NAMES:
        return ONNX_DIR / f"{name}_fp16.onnx"
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"kernel precision must be fp32 or fp16, got {precision!r}")
    return ONNX_DIR / f"{name}.onnx"


class Kernels:
    """The ONNX kernels on one execution device. Sessions are cached process-wide.

    ``arena``: use ONNX Runtime's CPU memory arena (default; fastest, but each session keeps
    its peak allocation for the life of the process). ``False`` returns memory after every run
    (what a memory limit wants: :func:`engine.track.memory.make_kernels`); results are the same.
    ``precision``: "fp32" or "fp16" (the float16 graphs of :data:`FP16_KERNEL_NAMES`; which
    precision a device should use is :func:`engine.runtime.resolve_precision`'s business).
    ``notify``: called with a one-line message when a kernel falls back to bands after running
    out of memory (e.g. ``progress.message``).
    """

    def __init__(self, device: str = "auto", threads: int | None = None, arena: bool = True,
                 precision: str = "fp32", notify=None):
        self.device = device
        self.arena = bool(arena)
        self.precision = precision
        self.notify = notify
        #: band height (rows) per kernel after an out-of-memory retry; absent: whole images
        self.band_rows: dict[str, int] = {}
        self._lean_opts = None      # onnxruntime RunOptions after an allocation failure
        self._copy_out = False      # copy outputs out of a capped arena (WT_ORT_ARENA_MB)
        if device in TORCH_DEVICES:
            from .kernels_torch import kernels, kernels_fp16

            table = kernels()
            if precision == "fp16":
                table.update(kernels_fp16())
            self._s = {n: _TorchSession(table[n][0], table[n][2], device.removeprefix("torch-"),
                                        threads) for n in KERNEL_NAMES}
        else:
            from ..runtime import arena_limit_mb

            self._s = {n: get_session(graph_path(n, precision), device, threads,
                                      arena=self.arena) for n in KERNEL_NAMES}
            self._threads = threads
            self._copy_out = arena_limit_mb() is not None

    # -- running a kernel, in bands after an allocation failure
    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``feeds`` through kernel ``name``; on an allocation failure retried in halving row
        bands (see the module docstring)."""
        spec = _BANDS[name]
        height = feeds[spec.inputs[0]].shape[2]
        while True:
            rows = self.band_rows.get(name, height)
            try:
                if rows >= height:
                    out = self._s[name].run(None, feeds, self._lean_options())
                    # outputs are views of ONNX Runtime's arena; under a cap (standing in for a
                    # GPU, whose outputs are copied to the host) they must not hold it
                    return [np.array(o) for o in out] if self._copy_out else out
                return self._run_bands(name, feeds, rows)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
                if not is_out_of_memory(e):
                    raise
                self._go_lean()
                cur = min(rows, height)
                if cur <= MIN_BAND_ROWS:
                    raise KernelMemoryError(
                        f"out of memory in the '{name}' kernel on {self.device} at "
                        f"{_width(feeds, spec)}x{height} "
                        f"px even in bands of {cur} rows ({_oom_detail(e)}); lower the working "
                        "resolution (--max-side), track a coarser grid (--grid), use --precision "
                        "fp16 on a GPU or set --memory-limit") from None
                self.band_rows[name] = max(MIN_BAND_ROWS, cur // 2)
                if self.notify is not None:
                    self.notify(f"out of memory in the '{name}' kernel on a {_width(feeds, spec)}x"
                                f"{height} image; retrying in bands of {self.band_rows[name]} rows")

    def _run_bands(self, name: str, feeds: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        spec = _BANDS[name]
        height = feeds[spec.inputs[0]].shape[2]
        outs: list[np.ndarray] | None = None
        for y0 in range(0, height, rows):
            y1 = min(height, y0 + rows)
            a, b = max(0, y0 - spec.halo), min(height, y1 + spec.halo)
            sub = dict(feeds)
            for k in spec.inputs:
                sub[k] = np.ascontiguousarray(feeds[k][:, :, a:b])
            if spec.flow_in is not None and a:
                # the kernel adds the flow to its own pixel grid, which starts at row 0
                sub[spec.flow_in] = sub[spec.flow_in].copy()
                sub[spec.flow_in][:, 1] += np.float32(a)
            res = self._s[name].run(None, sub, self._lean_options())
            for i in spec.flow_out:
                if a:
                    res[i][:, 1] -= np.float32(a)
            if outs is None:
                outs = [np.empty(r.shape[:2] + (height,) + r.shape[3:], r.dtype) for r in res]
            for o, r in zip(outs, res):
                o[:, :, y0:y1] = r[:, :, y0 - a:y1 - a]
            del res     # (views of the arena: let the next band have it)
        return outs

    def _lean_options(self):
        """None normally; after an allocation failure (ONNX Runtime sessions), RunOptions that
        shrink the arenas at the end of every run: each session otherwise keeps regions sized
        for its largest run, and in a capped (or full) arena those starve the others."""
        return self._lean_opts

    def _go_lean(self) -> None:
        """After an allocation failure: switch to lean sessions (no memory pattern), give every
        session's arena memory back now (a tiny run of each with shrinkage) and from now on
        after every run; torch: empty its cache."""
        if self.device in TORCH_DEVICES:
            if self.device == "torch-cuda":
                import torch

                torch.cuda.empty_cache()
            return
        if self._lean_opts is None:
            import onnxruntime as ort

            from ..runtime import arena_limit_mb

            shrink = []
            if self.arena or arena_limit_mb() is not None:   # no CPU arena: nothing to shrink
                shrink.append("cpu:0")
            if "CUDAExecutionProvider" in self._s["warp"].get_providers():
                shrink.append("gpu:0")
            opts = ort.RunOptions()
            if shrink:
                opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", ";".join(shrink))
            self._lean_opts = opts
            # sessions without a memory pattern (one block for a run's whole workspace)
            for n in KERNEL_NAMES:
                self._s[n] = get_session(graph_path(n, self.precision), self.device,
                                         self._threads, arena=self.arena, lean=True)
        for n in KERNEL_NAMES:
            self._s[n].run(None, _tiny_feeds(n), self._lean_opts)

    def features(self, gray: np.ndarray) -> np.ndarray:
        """Descriptors (C, h, w) of a grey image (h, w) with values in [0, 1]."""
        out = self._run("features", {"image": gray[None, None].astype(np.float32)})[0]
        return out[0]

    def pyramid(self, gray: np.ndarray, levels: int) -> list[np.ndarray]:
        """Descriptor pyramid [level 0, 1, ...] of a grey (h, w) image in [0, 1]."""
        import cv2

        imgs = [gray.astype(np.float32)]
        for _ in range(1, levels):
            imgs.append(cv2.pyrDown(imgs[-1]))
        return [self.features(im) for im in imgs]

    def match(self, ref: np.ndarray, tgt: np.ndarray, flow: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One local-search step: (flow, best aggregated cost, distinctiveness), each (.., h, w)."""
        f, c, d = self._run("match", {"ref": ref[None], "tgt": tgt[None],
                                      "flow": flow[None].astype(np.float32)})
        return f[0], c[0, 0], d[0, 0]

    def score(self, ref_a: np.ndarray, ref_b: np.ndarray, tgt: np.ndarray, flow: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """3x3-aggregated L1 descriptor costs (h, w) of ``flow`` against two references."""
        c = self._run("score", {"ref_a": ref_a[None], "ref_b": ref_b[None],
                                "tgt": tgt[None], "flow": flow[None].astype(np.float32)})[0]
        return c[0, 0], c[0, 1]

    def lk(self, ref: np.ndarray, tgt: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Lucas-Kanade sub-pixel polish of ``flow`` (2, h, w): reference intensities ``ref``
        (h, w) in the flow's domain against the target grey frame ``tgt`` (h', w')."""
        out = self._run("lk", {"ref": ref[None, None].astype(np.float32),
                               "tgt": tgt[None, None].astype(np.float32),
                               "flow": flow[None].astype(np.float32)})[0]
        return out[0]

    def warp(self, src: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear samples (C, h', w') of ``src`` (C, h, w) at pixel ``coords`` (2, h', w'),
        border-clamped, and the in-bounds mask (h', w') as bool."""
        s, m = self._run("warp", {"src": src[None].astype(np.float32),
                                  "coords": coords[None].astype(np.float32)})
        return s[0], m[0, 0] > 0.5

    def flow(self, ref_pyr: list[np.ndarray], tgt_pyr: list[np.ndarray],
             init: np.ndarray | None = None, first_level: int | None = None,
             last_level: int = 0, final_iters: int = 1
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coarse-to-fine dense flow ref -> tgt (2, h, w) at level ``last_level``.

        Starts at ``first_level`` (default: coarsest) from ``init`` (a level-0 flow, or zero)
        and returns (flow, cost, distinctiveness) at ``last_level``. ``final_iters`` > 1
        repeats the last level (re-warping at the sub-pixel estimate refines it further).
        """
        top = len(ref_pyr) - 1 if first_level is None else first_level
        h, w = ref_pyr[top].shape[1:]
        flow = (np.zeros((2, h, w), np.float32) if init is None
                else resize_flow(init, h, w))
        cost = dist = None
        levels = list(range(top, last_level - 1, -1)) + [last_level] * (final_iters - 1)
        for lvl in levels:
            h, w = ref_pyr[lvl].shape[1:]
            flow = resize_flow(flow, h, w)
            flow, cost, dist = self.match(ref_pyr[lvl], tgt_pyr[lvl], flow)
            flow = median_flow(flow)
        return flow, cost, dist


def sample_points(planes: np.ndarray, xy: np.ndarray, offsets: np.ndarray | None = None
                  ) -> np.ndarray:
    """Bilinear samples of ``planes`` (C, h, w) at pixel positions ``xy`` (M, 2) -> (M, C),
    border-replicated; with ``offsets`` (K, 2) px, at every ``xy + offset`` -> (M, K, C) (the
    sums taken in float32, as ``xy[:, None] + offsets`` would). One ``cv2.remap`` of the
    channels interleaved (h, w, C): the same samples bit for bit as one remap per channel,
    several times faster (the map is converted once); planes whose memory is already
    interleaved (a ``(h, w, C)`` array's transposed view) are not copied. (cv2.remap limits
    maps to < 32767 per side, so points are laid out in rows of 1024.)"""
    import cv2

    m = len(xy)
    k = 1 if offsets is None else len(offsets)
    n = m * k
    width = 1024
    rows = max(1, -(-n // width))
    maps = []
    for i in (0, 1):
        mp = np.zeros(rows * width, np.float32)
        if offsets is None:
            mp[:n] = xy[:, i]
        else:   # written straight into the map: no (M, K, 2) intermediate
            np.add(np.asarray(xy[:, i], np.float32)[:, None],
                   np.asarray(offsets[:, i], np.float32)[None], out=mp[:n].reshape(m, k))
        maps.append(mp.reshape(rows, width))
    img = np.ascontiguousarray(np.moveaxis(planes, 0, -1), np.float32)
    out = cv2.remap(img, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = out.reshape(rows * width, planes.shape[0])[:n]
    return out if offsets is None else out.reshape(m, k, planes.shape[0])


def _width(feeds: dict[str, np.ndarray], spec: _Bands) -> int:
    """Width of a kernel call's banded inputs, px."""
    return int(feeds[spec.inputs[0]].shape[3])


def _tiny_feeds(name: str) -> dict[str, np.ndarray]:
    """8x8 inputs for kernel ``name`` (a run that only serves to shrink its arena)."""
    def z(c):
        return np.zeros((1, c, 8, 8), np.float32)

    c = 8   # descriptor channels (kernels_torch.N_FEATURES; the graphs take any count)
    return {"features": lambda: {"image": z(1)},
            "match": lambda: {"ref": z(c), "tgt": z(c), "flow": z(2)},
            "score": lambda: {"ref_a": z(c), "ref_b": z(c), "tgt": z(c), "flow": z(2)},
            "lk": lambda: {"ref": z(1), "tgt": z(1), "flow": z(2)},
            "warp": lambda: {"src": z(1), "coords": z(2)}}[name]()


class _TorchSession:
    """One kernel's torch source module behind onnxruntime's ``run(None, feeds)`` interface:
    the measurement backend of ``--device torch-cuda`` / ``torch-cpu`` (same inputs, outputs
    and maths as the exported graph; the parity tests hold them together)."""

    def __init__(self, module, inputs: list[str], device: str, threads: int | None = None):
        import torch

        if threads and device == "cpu":
            torch.set_num_threads(int(threads))
        self.inputs = inputs
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def run(self, _output_names, feeds: dict[str, np.ndarray], _run_options=None
            ) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n], np.float32)).to(self.device)
                    for n in self.inputs]
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in out]
