"""``generate_clip``: render one clip and write its exact ground truth (runs in the current Python
with ``import bpy``; resets Blender's current file)."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
KINDS = ("static", "dynamic", "tripod", "zoom", "deform")
#: per-clip cache key file (settings + key), written when a clip is complete
SETTINGS_FILE = "settings.json"


class GroundTruthError(RuntimeError):
    """The generated ground truth failed its self-check."""


@dataclass(frozen=True)
class ClipSettings:
    kind: str
    seed: int = 0
    width: int = 320
    height: int = 240
    n_frames: int = 48
    fps: float = 24.0
    motion_blur: bool = False
    noise: float = 0.0
    exposure_change: bool = False
    n_queries: int = 1024
    samples: int = 16
    with_depth: bool = True

    def as_dict(self) -> dict:
        d = asdict(self)
        d["generator_version"] = GENERATOR_VERSION
        return d

    def cache_key(self) -> str:
        """Hash of everything that changes the output (plus the generator version)."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for blk in iter(lambda: fh.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def generate_clip(out_dir: Path, kind: str, seed: int = 0, width: int = 320, height: int = 240,
                  n_frames: int = 48, fps: float = 24.0, motion_blur: bool = False,
                  noise: float = 0.0, exposure_change: bool = False, n_queries: int = 1024,
                  samples: int = 16, with_depth: bool = True) -> Path:
    """Render a random clip of ``kind`` and write its ground truth; returns ``out_dir``.

    Writes ``out_dir/frames/00000.png``... (8-bit RGB), ``out_dir/clip.mp4`` (H.264) and
    ``out_dir/gt.npz`` (a track file with ``metadata["ground_truth"] = True``). Frame index t is
    Blender frame t and PNG ``{t:05d}.png``. ``noise`` is the std of additive Gaussian noise as a
    fraction of full scale (e.g. 0.01); ``exposure_change`` animates exposure (stops per frame in
    ``metadata["generator"]["exposure_ev"]``). Deterministic for equal arguments.
    Raises :class:`GroundTruthError` if the self-check fails (the rejected answers are written to
    ``gt.failed.npz`` for inspection, never to ``gt.npz``).
    """
    import bpy  # first, so that a missing bpy fails with a clear ImportError

    from engine.trackfile import TrackData, make_metadata, save_trackfile

    from . import groundtruth, render, scene
    from .selfcheck import self_check

    s = ClipSettings(kind, int(seed), int(width), int(height), int(n_frames), float(fps),
                     bool(motion_blur), float(noise), bool(exposure_change), int(n_queries),
                     int(samples), bool(with_depth))
    if s.kind not in KINDS:
        raise ValueError(f"unknown clip kind {s.kind!r}; choose one of {', '.join(KINDS)}")
    if s.width < 16 or s.height < 16 or s.width % 2 or s.height % 2:
        raise ValueError(f"size must be even and >= 16 px, got {s.width}x{s.height}")
    if s.n_frames < 1 or s.n_queries < 1 or s.samples < 1 or s.fps <= 0 or s.noise < 0:
        raise ValueError("n_frames, n_queries and samples must be >= 1, fps > 0, noise >= 0")
    out_dir = Path(out_dir)
    frames_dir = out_dir / "frames"
    for stale in (SETTINGS_FILE, "gt.npz", "gt.failed.npz", "clip.mp4"):
        (out_dir / stale).unlink(missing_ok=True)
    if frames_dir.exists():
        shutil.rmtree(frames_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    built = scene.build_scene(s.kind, s.seed, s.width, s.height, s.n_frames, s.fps)
    timings["build"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    geo = groundtruth.collect_geometry(built, s.n_frames)
    rng_q = np.random.default_rng([s.seed, 11])
    query, tri, bary = groundtruth.sample_queries(geo, rng_q, s.n_queries, s.width, s.height)
    tracks_3d = groundtruth.follow(geo, tri, bary)
    tracks_2d, _, visible = groundtruth.visibility(geo, tracks_3d, tri, s.width, s.height)
    group = geo.tri_group[tri]
    timings["ground_truth"] = time.perf_counter() - t0

    render.configure_cycles(built.scene, s.seed, s.samples, s.motion_blur)
    timings["render"] = render.render_frames(built.scene, frames_dir, s.n_frames)
    ev = render.post_process(frames_dir, s.n_frames, np.random.default_rng([s.seed, 12]), s.noise,
                             s.exposure_change)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wt-depth-") as tmp:
        depth = render.render_depth(built.scene, s.n_frames, Path(tmp))
    timings["depth"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    encoder = render.encode_mp4(frames_dir, out_dir / "clip.mp4", s.n_frames, s.fps, s.width,
                                s.height)
    timings["encode"] = time.perf_counter() - t0

    colors = _query_colors(frames_dir, query)
    md = make_metadata(
        (s.width, s.height), (0, s.n_frames - 1), s.fps, ground_truth=True, kind=s.kind,
        seed=s.seed,
        generator={**s.as_dict(), "blender_version": bpy.app.version_string, "encoder": encoder,
                   "exposure_ev": ev, "cache_key": s.cache_key(),
                   "render_seconds_per_frame": timings["render"] / s.n_frames},
        dynamic_groups={str(k): v for k, v in sorted(built.dynamic_groups.items())},
        group_names={str(k): v for k, v in sorted(built.group_names.items())},
        depth_background="inf", timings=timings,
        source={"path": "clip.mp4", "hash": "sha256:" + _sha256(out_dir / "clip.mp4")})
    f32 = np.float32
    data = TrackData(
        query=query.astype(f32), tracks_2d=tracks_2d.astype(f32), visible=visible,
        confidence=visible.astype(f32), tracks_3d=tracks_3d.astype(f32),
        cam_to_world=geo.cam_to_world.astype(f32), K=geo.K.astype(f32), metadata=md,
        group=group.astype(np.int32), colors=colors, depth=depth if s.with_depth else None)
    report = self_check(data, depth=depth)
    md["self_check"] = report.as_dict()
    if not report.ok:  # kept for inspection under a name no consumer picks up as ground truth
        save_trackfile(out_dir / "gt.failed.npz", data)
        raise GroundTruthError(f"ground-truth self-check failed for {out_dir} (see gt.failed.npz): "
                               f"{report.as_dict()}")
    save_trackfile(out_dir / "gt.npz", data)
    # Written last: its presence (with a matching key) marks a complete clip for suite caching.
    (out_dir / SETTINGS_FILE).write_text(json.dumps(
        {**s.as_dict(), "cache_key": s.cache_key()}, indent=1, sort_keys=True))
    return out_dir


def is_cached(out_dir: Path, settings: ClipSettings) -> bool:
    """True when ``out_dir`` holds a complete clip generated with exactly ``settings``."""
    out_dir = Path(out_dir)
    try:
        saved = json.loads((out_dir / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return False
    n = settings.n_frames
    return (saved.get("cache_key") == settings.cache_key() and (out_dir / "gt.npz").is_file()
            and (out_dir / "clip.mp4").is_file()
            and all((out_dir / "frames" / f"{t:05d}.png").is_file() for t in (0, n - 1)))


def _query_colors(frames_dir: Path, query: np.ndarray) -> np.ndarray:
    """RGB (uint8) of each query's nearest pixel in its query frame (as written, post effects)."""
    import cv2

    out = np.zeros((len(query), 3), np.uint8)
    for t in np.unique(query[:, 0]).astype(int):
        img = cv2.imread(str(frames_dir / f"{t:05d}.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
        sel = np.flatnonzero(query[:, 0] == t)
        x = np.clip(np.round(query[sel, 1]).astype(int), 0, img.shape[1] - 1)
        y = np.clip(np.round(query[sel, 2]).astype(int), 0, img.shape[0] - 1)
        out[sel] = img[y, x]
    return out
