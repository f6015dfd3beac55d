"""Running the engine in a subprocess, off Blender's main thread, with progress and cancel.

No bpy here: the Track Clip operator owns the Blender side (timer, status bar, clip properties).

A :class:`EngineJob` runs a list of command lines one after the other in a fresh work folder
inside the cache root. A reader thread parses the engine's ``WT-PROGRESS`` lines
(``engine.progress.parse_line``) from the merged stdout/stderr; the main thread only reads the
job's attributes. On success the work folder is renamed atomically to ``<cache root>/<key>``;
on failure or cancel it is deleted, so a partial result can never be found and reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Sequence

RESULT_NAME = "result.npz"
JOB_INFO = "job.json"
EXT_DIR = Path(__file__).resolve().parent.parent  # the extension's root (holds ``engine``)


def _parse_progress(line: str) -> dict | None:
    from ..engine.progress import parse_line

    return parse_line(line)


# ------------------------------------------------------------------------------------ cache keys
def _sample_file(h, path: Path, sample: int = 1 << 20) -> None:
    """Hash size + first/middle/last ``sample`` bytes (fast on multi-GB movies, content-keyed)."""
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        for off in sorted({0, max(0, size // 2 - sample // 2), max(0, size - sample)}):
            fh.seek(off)
            h.update(fh.read(sample))


def footage_hash(path: str | os.PathLike, source: str = "MOVIE") -> str:
    """Content hash of a movie file or of the image sequence that ``path`` (one frame) belongs to."""
    path = Path(path)
    h = hashlib.sha256()
    if source == "SEQUENCE":
        stem = path.stem.rstrip("0123456789")
        files = sorted(p for p in path.parent.iterdir()
                       if p.suffix == path.suffix and p.stem.rstrip("0123456789") == stem)
        h.update(str(len(files)).encode())
        for p in files:
            h.update(f"{p.name}:{p.stat().st_size}".encode())
        for p in {files[0], files[-1]} if files else ():
            _sample_file(h, p)
    else:
        _sample_file(h, path)
    return h.hexdigest()


def cache_key(content_hash: str, settings: dict, engine_version: str) -> str:
    """Cache entry name: the footage content + the settings that change the result."""
    blob = json.dumps({"footage": content_hash, "settings": settings, "engine": engine_version},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def find_cached(cache_root: str | os.PathLike, key: str) -> Path | None:
    """The cached result for ``key``, if a complete one exists."""
    p = Path(cache_root) / key / RESULT_NAME
    return p if p.is_file() else None


# ------------------------------------------------------------------------------- colour spaces
#: Blender colour space name (``clip.colorspace_settings.name``) -> the engine's ``--colorspace``.
#: Names of Blender 4.2 LTS and 5.x (and the 3.x ones: "Linear", "Raw", "XYZ", ...). Display and
#: log encodings are used as they are ("srgb": their values are already perceptually spaced);
#: scene-linear spaces get the sRGB curve ("linear"); data is only normalised ("raw"). Any other
#: name (a studio OCIO config) falls back to "auto" with a note in the job log.
COLORSPACE_MAP: dict[str, str] = {
    # display-referred / log encodings: the values are used as they are
    "sRGB": "srgb", "Display P3": "srgb", "Rec.1886": "srgb", "Rec.2020": "srgb",
    "Rec.2100-HLG": "srgb", "Rec.2100-PQ": "srgb", "Filmic sRGB": "srgb", "Filmic Log": "srgb",
    "AgX Base sRGB": "srgb", "AgX Base Display P3": "srgb", "AgX Base Rec.1886": "srgb",
    "AgX Base Rec.2020": "srgb", "AgX Log": "srgb", "ACES 1.3 sRGB": "srgb",
    "ACES 2.0 sRGB": "srgb", "Khronos PBR Neutral sRGB": "srgb", "ACEScc": "srgb",
    "ACEScct": "srgb",
    # scene-linear light: the sRGB OETF is applied before tracking
    "Linear Rec.709": "linear", "Linear Rec.2020": "linear", "Linear CIE-XYZ D65": "linear",
    "Linear CIE-XYZ E": "linear", "Linear DCI-P3 D65": "linear",
    "Linear FilmLight E-Gamut": "linear", "ACEScg": "linear", "ACES2065-1": "linear",
    "scene_linear": "linear", "Linear": "linear", "Linear ACES": "linear",
    "Linear ACEScg": "linear", "XYZ": "linear",
    # non-colour data
    "Non-Color": "raw", "Raw": "raw",
}


def engine_colorspace(name: str) -> tuple[str, str | None]:
    """The engine's ``--colorspace`` for a Blender colour space name, and a note for the job log
    when the name is not in :data:`COLORSPACE_MAP` (then ``"auto"``: the engine's own guess)."""
    mode = COLORSPACE_MAP.get(name)
    if mode is not None:
        return mode, None
    return "auto", (f"colour space {name!r} is not one Worldtrack knows; the engine guesses "
                    "(8/16-bit as display-referred, float as linear)")


# ------------------------------------------------------------------------------------ commands
def subprocess_env() -> dict[str, str]:
    """Environment for the engine process: ``engine`` importable from the extension folder, and
    every folder on this interpreter's path (Blender's bundled-wheels site-packages included)."""
    env = dict(os.environ)
    paths = [str(EXT_DIR)] + [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def engine_steps(clip_path: str, work: Path, settings: dict, python: str | None = None) -> list[list[str]]:
    """``python -m engine track`` then ``python -m engine solve`` for one clip.

    ``settings``: ``start``/``end`` (footage frame numbers, inclusive), ``grid`` (track every
    grid-th input pixel of the first frame), ``max_size`` (working resolution, longest side px),
    ``device`` (auto / cuda / cpu), optionally ``precision`` (auto / fp32 / fp16, the track
    step's kernels) and ``colorspace`` (auto / srgb / linear / raw, see
    :func:`engine_colorspace`) and ``memory_limit_mb`` (the preference, MiB; passed to both
    steps, not part of the cache key: it does not change the result beyond float rounding);
    for the solve ``zoom`` (bool), ``distortion`` (none / k1 / k1k2), ``principal_point``
    (auto / centre) and optionally a known
    lens ``focal_mm`` + ``sensor_width_mm``.
    """
    py = python or sys.executable
    tracks = str(work / "tracks.npz")
    track = [py, "-m", "engine", "track", str(clip_path), "--out", tracks,
             "--frames", f"{settings['start']}:{settings['end']}", "--grid", str(settings["grid"]),
             "--max-side", str(settings["max_size"]), "--device", settings.get("device", "auto"),
             "--progress", "lines"]
    if settings.get("colorspace"):
        track += ["--colorspace", settings["colorspace"]]
    if settings.get("precision"):
        track += ["--precision", settings["precision"]]
    solve = [py, "-m", "engine", "solve", tracks, "--out", str(work / RESULT_NAME),
             "--distortion", settings.get("distortion", "none"),
             "--principal-point", settings.get("principal_point", "auto"), "--progress", "lines"]
    if settings.get("memory_limit_mb"):
        mem = ["--memory-limit", str(int(settings["memory_limit_mb"]))]
        track += mem
        solve += mem
    if settings.get("zoom"):
        solve.append("--zoom")
    if settings.get("focal_mm"):
        solve += ["--focal-mm", str(settings["focal_mm"]), "--sensor-width", str(settings["sensor_width_mm"])]
    return [track, solve]


# ------------------------------------------------------------------------------------ the job
class EngineJob:
    """Run ``steps`` (argv lists; ``{work}`` in an argument is replaced by the work folder).

    States: ``idle`` → ``running`` → ``done`` | ``failed`` | ``cancelled``. Thread-safe reads of
    ``state``, ``progress`` (latest parsed progress record), ``messages`` (the job log: the
    caller's ``notes`` first, then the engine's messages) and ``error``.
    """

    def __init__(self, steps: Sequence[Sequence[str]], cache_root: str | os.PathLike, key: str,
                 env: dict[str, str] | None = None, info: dict | None = None,
                 notes: Sequence[str] = ()):
        self.steps = [list(s) for s in steps]
        self.cache_root = Path(cache_root)
        self.key = key
        self.env = env if env is not None else subprocess_env()
        self.info = dict(info or {})
        self.state = "idle"
        self.progress: dict = {}
        self.step_index = 0
        self.messages: list[str] = list(notes)  # job log: the notes, then the engine's messages
        self.tail: deque[str] = deque(maxlen=40)
        self.error = ""
        self.result_path: Path | None = None
        self.started_at = 0.0
        self.finished_at = 0.0
        self._proc: subprocess.Popen | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.work: Path | None = None

    # -- control (main thread)
    def start(self) -> "EngineJob":
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=".wt-job-", dir=self.cache_root))
        self.state = "running"
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="worldtrack-engine", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop the engine (SIGTERM to its process group, SIGKILL after 3 s); nothing is kept."""
        self._cancel.set()
        self._terminate()

    def wait(self, timeout: float | None = None) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1] (steps weighted equally)."""
        n = max(1, len(self.steps))
        f = float(self.progress.get("fraction") or 0.0)
        return min(1.0, (min(self.step_index, n) + (f if self.state == "running" else 0.0)) / n)

    def status_text(self) -> str:
        if self.state != "running":
            return self.state
        p = self.progress
        eta = p.get("eta_s")
        eta_txt = "" if eta is None else f", ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        stage = p.get("stage") or "starting"
        return (f"Worldtrack: {stage} {self.fraction * 100:.0f}% "
                f"(step {self.step_index + 1}/{len(self.steps)}{eta_txt})")

    # -- worker thread (never touches bpy)
    def _run(self) -> None:
        try:
            for i, argv in enumerate(self.steps):
                self.step_index = i
                self.progress = {}
                if self._cancel.is_set():
                    break
                argv = [a.replace("{work}", str(self.work)) for a in argv]
                rc = self._run_step(argv)
                if self._cancel.is_set():
                    break
                if rc != 0:
                    last = "\n".join(list(self.tail)[-8:])
                    raise RuntimeError(f"engine step {i + 1} ({' '.join(argv[1:4])}) failed "
                                       f"with exit code {rc}:\n{last}")
            if self._cancel.is_set():
                self._discard("cancelled")
                return
            if not (self.work / RESULT_NAME).is_file():
                raise RuntimeError(f"the engine finished without writing {RESULT_NAME}")
            self.step_index = len(self.steps)
            (self.work / JOB_INFO).write_text(json.dumps({**self.info, "log": self.messages},
                                                         indent=1, default=str))
            self.result_path = self._publish()
            self.finished_at = time.monotonic()
            self.state = "done"
        except Exception as e:  # noqa: BLE001 - reported to the artist, work folder removed
            self.error = str(e)
            self._discard("cancelled" if self._cancel.is_set() else "failed")

    def _run_step(self, argv: list[str]) -> int:
        kw = {"start_new_session": True} if os.name == "posix" else \
             {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        with self._lock:
            if self._cancel.is_set():
                return -1
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env, cwd=str(self.work),
                                          text=True, errors="replace", bufsize=1, **kw)
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            rec = _parse_progress(line)
            if rec is None:
                self.tail.append(line.rstrip())
            elif "message" in rec:
                self.messages.append(str(rec["message"]))
            else:
                self.progress = rec
        return self._proc.wait()

    def _terminate(self) -> None:
        """SIGTERM now (the engine exits 130 and writes nothing), SIGKILL after 3 s if needed;
        returns at once so Blender's UI never waits on it."""
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._signal(proc, hard=False)

        def _escalate():
            try:
                proc.wait(3.0)
            except subprocess.TimeoutExpired:
                self._signal(proc, hard=True)

        threading.Thread(target=_escalate, name="worldtrack-kill", daemon=True).start()

    @staticmethod
    def _signal(proc: subprocess.Popen, hard: bool) -> None:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
            elif hard:
                proc.kill()
            else:
                proc.terminate()
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def _publish(self) -> Path:
        dest = self.cache_root / self.key
        if dest.exists():  # a concurrent identical run already published: keep that one
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            os.replace(self.work, dest)
        return dest / RESULT_NAME

    def _discard(self, state: str) -> None:
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
        self.finished_at = time.monotonic()
        self.state = state


# Running jobs by clip name (module state: lives as long as Blender, never saved in the .blend).
JOBS: dict[str, EngineJob] = {}
