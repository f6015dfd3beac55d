"""The engine's working-memory limit (``--memory-limit MIB``, ``memory_limit_mb=``).

Always: per-clip data that lives on disk (frames, pair flows, anchor fields, track-file arrays)
has its pages dropped from the process after each use (:meth:`MemoryBudget.release`), so the
resident set does not grow with the clip's length (measured on a 1200-frame clip; see
BENCHMARKS.md). Without a limit (``None``, the default) nothing else changes: the same block
sizes, caches and ONNX Runtime sessions as always. With a limit ``L`` MiB:

- **Fail early.** The tracker needs a fixed amount that grows with the working resolution
  (interpreter and libraries, the ONNX kernels' per-pixel workspace, one step's propagation
  state, two cached descriptor pyramids): :func:`track_minimum_mb`. When ``L`` is below that
  plus the smallest output block, :class:`MemoryLimitError` says so before any work is done.
- **Sizes from the limit.** What is left after the fixed part (:meth:`MemoryBudget.spare_bytes`)
  sets the output block (frames x tracks sampled at once), the number of cached pyramids and
  the refine stage's chunks.
- **Per-clip data stays on disk.** Frames, pair flows, anchor fields and the track-file arrays
  are disk memory maps (they always are); their pages are dropped from the process after each
  use, limit or not (:meth:`MemoryBudget.release`: ``madvise(MADV_DONTNEED)`` on the shared file
  mapping -- the data stays in the file / OS page cache and is paged back in on the next
  access), so the resident set no longer grows with clip length. Arrays the refine stage keeps
  per track and frame move from RAM to disk memory maps when they would not fit
  (:meth:`MemoryBudget.array`).
- **Lean ONNX sessions.** ONNX Runtime's CPU memory arena keeps every session's peak allocation
  for the life of the process (~100 MB at 320x240); with a limit the sessions are created
  without it (:func:`make_kernels`: ``arena=False`` of :func:`engine.runtime.get_session`),
  memory is returned after each run.

Results: the tracker's output is bit-identical with and without a limit (each track and frame
is computed independently of the block it is in; tested). The refine stage's smaller chunks
change the length of some vectorised float64 operations, which can change the last bit of a
few results (measured on a dense 320x240x48 solve: < 100 of 8.5 M positions, by < 1e-8 px).

The track-file writer (:mod:`engine.trackfile`) is bounded with or without a limit: its fill,
validation and packing go in 16 MiB blocks whose pages it drops after each (~26 MB with their
temporaries, measured, whatever the file size; they run after tracking has given back its
working memory). Everything that is
not a mapping the engine owns (the interpreter, library code, ONNX Runtime's own scratch) is
estimated, not enforced: the limit is a planning bound, not an ``rlimit``.
"""
from __future__ import annotations

import functools
import os
import tempfile

import numpy as np

from ..match.ops import KERNEL_NAMES, Kernels  # noqa: F401 - KERNEL_NAMES re-exported
from ..pages import release_pages  # noqa: F401 - re-exported: engine.track.memory.release_pages

MIB = 1 << 20

#: Interpreter + numpy + OpenCV + onnxruntime with the five kernel sessions loaded, MiB (measured
#: ~80 MiB resident on Linux x86-64, rounded up).
BASE_MB = 96
#: Tracker bytes per working-resolution pixel without the ONNX arena: kernel workspace of a
#: coarse-to-fine match + score + warp step, ~40 (2, h, w) / (h, w) propagation arrays, the query
#: and last-seen template pyramids, two cached descriptor pyramids (measured ~1.1 KB/px at
#: 320x240, rounded up).
TRACK_BYTES_PER_PX = 1400
#: One cached descriptor pyramid (8 float32 channels, 4/3 for the coarser levels), bytes / px.
PYRAMID_BYTES_PER_PX = 43
#: Smallest output block worth running, MiB.
MIN_BLOCK_MB = 8


class MemoryLimitError(RuntimeError):
    """The memory limit is below what the work needs even in its smallest configuration."""


def track_minimum_mb(work_size: tuple[int, int], decode_bytes: int = 0) -> int:
    """Least memory (MiB) the tracker can run in at working size ``work_size`` (w, h) px;
    ``decode_bytes``: peak of decoding one input frame (:attr:`engine.decode.Footage.
    decode_bytes`), which happens before tracking, not alongside it."""
    w, h = work_size
    work = max(TRACK_BYTES_PER_PX * w * h, int(decode_bytes))
    return int(np.ceil(BASE_MB + work / MIB + MIN_BLOCK_MB))


class MemoryBudget:
    """A memory limit in MiB (``None``: unlimited, today's behaviour) and what follows from it.

    ``fixed_mb``: the part of the limit already spoken for (see :func:`track_minimum_mb`).
    """

    def __init__(self, limit_mb: int | None = None, fixed_mb: float = 0.0):
        if limit_mb is not None and int(limit_mb) <= 0:
            raise MemoryLimitError(f"memory limit must be a positive number of MiB, got {limit_mb}")
        self.limit_mb = None if limit_mb is None else int(limit_mb)
        self.fixed_mb = float(fixed_mb)

    @property
    def limited(self) -> bool:
        return self.limit_mb is not None

    def require(self, need_mb: float, what: str, hint: str) -> None:
        """Raise :class:`MemoryLimitError` when ``need_mb`` does not fit the limit."""
        if self.limited and need_mb > self.limit_mb:
            raise MemoryLimitError(f"{what} needs at least {int(np.ceil(need_mb))} MiB; the memory "
                                   f"limit is {self.limit_mb} MiB. {hint}")

    def spare_bytes(self, default: int) -> int:
        """Bytes left for blocks/chunks after the fixed part; ``default`` when unlimited."""
        if not self.limited:
            return int(default)
        return int(max(MIN_BLOCK_MB, self.limit_mb - self.fixed_mb) * MIB)

    def block_bytes(self, default: int, share: float = 0.25) -> int:
        """Budget of one block: ``default`` when unlimited, else ``share`` of the spare memory
        (blocks allocate a few temporaries of their own size)."""
        if not self.limited:
            return int(default)
        return int(max(1 << 20, share * self.spare_bytes(default)))

    def cache_frames(self, default: int, work_size: tuple[int, int]) -> int:
        """Descriptor pyramids to keep cached: ``default`` unlimited, else what a tenth of the
        spare memory holds, between 2 (what one propagation step needs) and ``default``."""
        if not self.limited:
            return default
        per = PYRAMID_BYTES_PER_PX * work_size[0] * work_size[1]
        return int(min(default, max(2, 0.1 * self.spare_bytes(0) // max(per, 1))))

    def release(self, *arrays) -> None:
        """Drop the resident pages of shared file-backed memory maps from this process (the data
        stays in the file and the OS page cache; the next access pages it back in). Done with
        and without a limit: per-clip data lives on disk precisely so that the process does
        not grow with the clip's length. A no-op for in-RAM arrays, private (copy-on-write)
        maps, and where the OS has no ``madvise`` (Windows)."""
        for a in arrays:
            release_pages(a)

    def trim(self) -> None:
        """With a limit: give freed heap memory back to the OS (glibc ``malloc_trim``)."""
        if self.limited:
            _malloc_trim()

    def array(self, shape, dtype, folder: str | os.PathLike | None = None,
              fill=None) -> np.ndarray:
        """A work array: in RAM when unlimited or when it fits a quarter of the spare memory,
        else a disk memory map on an anonymous temporary file in ``folder`` (None: the system's
        temporary folder) that the OS deletes when the array is gone. Filled with ``fill``
        unless None (then uninitialised, as ``np.empty``)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not self.limited or nbytes <= self.block_bytes(0) or nbytes == 0:
            a = np.empty(shape, dtype)
        else:
            # the mapping keeps the (already unlinked) file alive; nothing to clean up
            a = np.memmap(tempfile.TemporaryFile(prefix=".wt-mem-", dir=folder), dtype=dtype,
                          mode="w+", shape=tuple(shape))
        if fill is not None:
            a[...] = fill
            self.release(a)
        return a


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def _malloc_trim() -> None:
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)


# ------------------------------------------------------------------------------ ONNX sessions
def make_kernels(device: str = "auto", threads: int | None = None,
                 budget: MemoryBudget | None = None, precision: str = "fp32",
                 notify=None) -> Kernels:
    """The ONNX kernels: the shared, cached sessions when unlimited; with a limit, sessions
    without ONNX Runtime's CPU memory arena (``arena=False``: memory returned after every run
    instead of kept at each session's peak; same results). ``precision``: the kernel precision
    already resolved for the device (:func:`engine.runtime.resolve_precision`). ``notify``:
    one-line messages when a kernel runs out of memory and retries in bands."""
    return Kernels(device, threads, arena=budget is None or not budget.limited,
                   precision=precision, notify=notify)


# --------------------------------------------------------------------- process-wide default
_PROCESS_LIMIT_MB: int | None = None


def set_process_limit(limit_mb: int | None) -> None:
    """Set the limit that stages without an explicit ``memory_limit_mb`` use (the ``solve``
    command line sets it for the refine stage it runs)."""
    global _PROCESS_LIMIT_MB
    MemoryBudget(limit_mb)  # validates
    _PROCESS_LIMIT_MB = None if limit_mb is None else int(limit_mb)


def process_limit() -> int | None:
    """The process-wide limit in MiB (None: unlimited)."""
    return _PROCESS_LIMIT_MB
