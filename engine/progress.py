"""Progress reporting and cancellation for long engine work.

Every long engine function takes ``progress: Progress | None``. It reports through
``with progress.stage("track", total=n) as st: ... st.advance()`` and calls ``progress.check()``
(or ``st.advance()``, which checks too) often enough that a cancel request lands within a second.

Output modes:
- ``bar``: a one-line bar with ETA on a terminal (stderr).
- ``lines``: machine-readable lines on stderr, one per update (rate-limited), for Blender::

      WT-PROGRESS {"stage": "track", "done": 12, "total": 48, "fraction": 0.25, "elapsed_s": 3.1, "eta_s": 9.3}

- ``quiet``: nothing printed; a ``callback(stage, done, total, eta_s)`` may still be given.
``auto`` picks ``bar`` on a TTY, else ``lines``.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import Callable, TextIO

PREFIX = "WT-PROGRESS "


class Cancelled(Exception):
    """Raised inside engine work when the user cancelled (Ctrl-C, Blender's Esc)."""


def parse_line(line: str) -> dict | None:
    """Parse one ``WT-PROGRESS`` line (as emitted in ``lines`` mode); None for other lines."""
    line = line.strip()
    if not line.startswith(PREFIX):
        return None
    try:
        return json.loads(line[len(PREFIX):])
    except ValueError:
        return None


class Progress:
    def __init__(self, mode: str = "auto", stream: TextIO | None = None,
                 callback: Callable[[str, int, int, float | None], None] | None = None,
                 cancel_event: threading.Event | None = None, min_interval_s: float = 0.2):
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        if mode not in ("bar", "lines", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.callback = callback
        self.cancel_event = cancel_event or threading.Event()
        self.min_interval_s = min_interval_s

    def cancel(self) -> None:
        self.cancel_event.set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if a cancel was requested."""
        if self.cancel_event.is_set():
            raise Cancelled("cancelled by the user")

    def stage(self, name: str, total: int) -> "Stage":
        return Stage(self, name, max(0, int(total)))

    def message(self, text: str) -> None:
        """A human-readable note (warnings, what was detected)."""
        if self.mode == "lines":
            print(PREFIX + json.dumps({"message": text}), file=self.stream, flush=True)
        elif self.mode == "bar":
            print("\r\033[K" + text, file=self.stream, flush=True)


def stage_of(progress: "Progress | None", name: str, total: int) -> "Stage | NullStage":
    """``progress.stage(name, total)``, or a silent stand-in when there is no ``progress``."""
    return progress.stage(name, total) if progress is not None else NullStage(name, total)


class NullStage:
    """A stage that reports nothing: the same calls as :class:`Stage`, for ``progress=None``."""

    def __init__(self, name: str = "", total: int = 0):
        self.name, self.total, self.done = name, total, 0

    def __enter__(self) -> "NullStage":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        self.done += n


class Stage:
    def __init__(self, progress: Progress, name: str, total: int):
        self.p, self.name, self.total = progress, name, total
        self.done = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def __enter__(self) -> "Stage":
        self._emit(force=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.done = max(self.done, self.total)
            self._emit(force=True)
            if self.p.mode == "bar":
                print(file=self.p.stream, flush=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._emit()
        self.p.check()

    def eta_s(self) -> float | None:
        if self.done <= 0 or self.total <= 0:
            return None
        el = time.monotonic() - self.t0
        return el / self.done * max(0, self.total - self.done)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.p.min_interval_s:
            return
        self._last = now
        eta = self.eta_s()
        if self.p.callback is not None:
            self.p.callback(self.name, self.done, self.total, eta)
        frac = self.done / self.total if self.total else 1.0
        if self.p.mode == "lines":
            rec = {"stage": self.name, "done": self.done, "total": self.total,
                   "fraction": round(frac, 4), "elapsed_s": round(now - self.t0, 2),
                   "eta_s": None if eta is None else round(eta, 1)}
            print(PREFIX + json.dumps(rec), file=self.p.stream, flush=True)
        elif self.p.mode == "bar":
            width = 30
            fill = int(width * min(1.0, frac))
            eta_txt = "--:--" if eta is None else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
            print(f"\r\033[K{self.name:<10} [{'#' * fill}{'.' * (width - fill)}] "
                  f"{self.done}/{self.total} ETA {eta_txt}", end="", file=self.p.stream, flush=True)
