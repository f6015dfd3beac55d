"""Thread-level parallelism for the engine's chunked numpy / OpenCV loops.

The heavy loops of the lift and the refinement (chunks of tracks, frames of a depth sweep) are
independent: each iteration reads shared inputs and writes its own slice of the outputs. numpy
ufuncs and OpenCV release the GIL on large arrays, so running iterations in threads uses the
machine's cores without copying data to other processes. Each iteration computes what it would
alone and results are handed back in order, so the results are a serial run's. (The engine's
process runs BLAS single-threaded, :func:`single_threaded_blas`: a threaded BLAS
splits a large product over its own threads, so the product's last bits could depend on how many
were free when two loop threads called it at once. Measured with one BLAS thread: the dense
static_0 solve gives the same output bit for bit with one loop thread or two.)

Every iteration in flight holds its own temporaries, so a run under a memory limit uses one
thread (the chunk sizes are budgeted for one). ``WT_THREADS`` caps the count (as for the ONNX
sessions, :func:`engine.runtime.default_threads`).
"""
from __future__ import annotations

import os
from collections import deque
from typing import Callable, Iterable, Iterator, Mapping, MutableMapping, TypeVar

R = TypeVar("R")

#: most threads a loop uses: beyond this the loops are memory-bound (measured on 2 cores only;
#: a guard against a many-core machine multiplying the per-iteration temporaries)
MAX_WORKERS = 8


#: BLAS libraries' thread-count variables (OpenBLAS, MKL, Apple Accelerate)
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def single_threaded_blas(environ: MutableMapping[str, str] = os.environ) -> None:
    """One BLAS thread for this process unless the environment already names a count. Only
    effective before numpy is first imported (BLAS reads it once, when it loads): ``python -m
    engine`` calls it first thing.

    The engine spreads its work over the cores itself, a chunk of tracks or a frame per thread;
    a threaded BLAS inside those threads oversubscribes the cores (its idle threads spin: a dense
    48-frame solve spent 44 s of system time in 3.2 million ``sched_yield`` calls, 12 s with one
    BLAS thread; its wall time changed by less than the machine's drift)."""
    for name in BLAS_THREAD_VARS:
        environ.setdefault(name, "1")


def blas_threads(environ: Mapping[str, str] = os.environ) -> str:
    """The BLAS thread count this process asked for (the report's record), or "default"."""
    for name in BLAS_THREAD_VARS:
        if name in environ:
            return environ[name]
    return "default"


def loop_workers(budget=None) -> int:
    """Threads for one chunked loop: 1 under a memory limit (``budget`` a
    :class:`engine.track.memory.MemoryBudget` that is limited; None: the process-wide limit of
    ``--memory-limit``), else the usable CPUs, at most ``MAX_WORKERS``."""
    from .runtime import default_threads
    from .track.memory import process_limit

    limited = process_limit() is not None if budget is None else budget.limited
    if limited:
        return 1
    return max(1, min(MAX_WORKERS, default_threads()))


def ordered_map(fn: Callable[..., R], items: Iterable[tuple], workers: int,
                check_cancel: Callable[[], None] | None = None) -> Iterator[R]:
    """Yield ``fn(*item)`` for each item, in the items' order, with up to ``workers`` calls
    running at once in threads. ``items`` is consumed on the calling thread (so decoding and
    caches stay single-threaded) and never more than ``workers`` items ahead of the results;
    ``check_cancel`` runs on the calling thread before each call starts. An exception in a call
    (or from ``check_cancel``, or a Ctrl-C on the calling thread) is raised here once the calls
    in flight have finished (calls are short: a chunk or a frame)."""
    if workers <= 1:
        for item in items:
            if check_cancel is not None:
                check_cancel()
            yield fn(*item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wt-loop") as ex:
        pending: deque = deque()
        try:
            for item in items:
                if check_cancel is not None:
                    check_cancel()
                pending.append(ex.submit(fn, *item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BaseException:       # also the caller stopping early (GeneratorExit)
            for f in pending:
                f.cancel()
            raise
