"""Clip reading and track-file writing shared by the baselines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.trackfile import TrackData, make_metadata, save_trackfile


def list_frames(clip_dir: str | Path) -> list[Path]:
    """PNG/JPEG frames of a clip folder (``frames/`` sub-folder or the folder itself), sorted."""
    d = Path(clip_dir)
    for sub in (d / "frames", d):
        if sub.is_dir():
            files = sorted(p for p in sub.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if files:
                return files
    return []


def load_frames(clip_dir: str | Path, grey: bool = True) -> np.ndarray:
    """All frames as (T, H, W) uint8 grey (or (T, H, W, 3) BGR). Falls back to ``*.mp4``."""
    import cv2

    files = list_frames(clip_dir)
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    if files:
        frames = [cv2.imread(str(p), flag) for p in files]
        if any(f is None for f in frames):
            raise ValueError(f"{clip_dir}: unreadable frame")
        return np.stack(frames)
    videos = sorted(Path(clip_dir).glob("*.mp4")) if Path(clip_dir).is_dir() else [Path(clip_dir)]
    if not videos:
        raise ValueError(f"{clip_dir}: no frames/ and no .mp4")
    cap = cv2.VideoCapture(str(videos[0]))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if grey else img)
    cap.release()
    if not out:
        raise ValueError(f"{videos[0]}: no decodable frames")
    return np.stack(out)


def clip_fps(clip_dir: str | Path, default: float = 24.0) -> float:
    """fps from ``gt.npz`` metadata or ``clip.json`` when present, else ``default``."""
    d = Path(clip_dir)
    gt = d / "gt.npz"
    if gt.is_file():
        try:
            from engine.trackfile import load_trackfile

            return float(load_trackfile(gt, check=False).metadata.get("fps", default))
        except Exception:  # noqa: BLE001 - fps is cosmetic here
            pass
    return default


def default_K(image_size: tuple[int, int], focal: float | None, n_frames: int) -> np.ndarray:
    """(T, 3, 3) intrinsics with the principal point at the image centre (OpenCV pixels)."""
    w, h = image_size
    f = float(focal) if focal else 1.2 * max(w, h)  # a typical 50 mm-ish guess when unknown
    k = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.float32)
    return np.tile(k, (n_frames, 1, 1))


def write_result(out: str | Path, *, query: np.ndarray, tracks_2d: np.ndarray, visible: np.ndarray,
                 image_size: tuple[int, int], fps: float, method: str, settings: dict,
                 confidence: np.ndarray | None = None, tracks_3d: np.ndarray | None = None,
                 cam_to_world: np.ndarray | None = None, K: np.ndarray | None = None,
                 solve: dict | None = None, timings: dict | None = None) -> Path:
    """Assemble and save a track file for a baseline's result.

    Methods that solve no camera store identity poses and ``solve = {"success": false}``;
    the harness reads ``metadata["solve"]["solved_frames"]`` (when present) to know which poses
    are real.
    """
    n, t = visible.shape
    tr = np.asarray(tracks_2d, np.float32).copy()
    vis = np.asarray(visible, bool) & np.isfinite(tr).all(-1)
    if confidence is None:
        confidence = vis.astype(np.float32)
    c2w = np.tile(np.eye(4, dtype=np.float32), (t, 1, 1)) if cam_to_world is None else cam_to_world
    md = make_metadata(image_size, (0, t - 1), fps,
                       solve=solve or {"success": False, "reason": f"{method} solves no camera"})
    md["engine"] = {"version": f"baseline:{method}", "settings": settings}
    md["timings"] = timings or {}
    data = TrackData(
        query=np.asarray(query, np.float32), tracks_2d=tr, visible=vis,
        confidence=np.clip(np.nan_to_num(np.asarray(confidence, np.float32)), 0, 1),
        tracks_3d=(np.full((n, t, 3), np.nan, np.float32) if tracks_3d is None
                   else np.asarray(tracks_3d, np.float32)),
        cam_to_world=np.asarray(c2w, np.float32),
        K=(default_K(image_size, None, t) if K is None else np.asarray(K, np.float32)),
        metadata=json.loads(json.dumps(md)))
    return save_trackfile(out, data)
