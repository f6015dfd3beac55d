"""Loaders for real footage with ground truth, in the standard formats.

Everything is returned in the project's conventions: pixel coordinates OpenCV (x right, y down,
top-left pixel centre at (0, 0)), poses camera-to-world (4x4) in OpenCV camera axes, intrinsics
as 3x3 ``K``. Frames are decoded lazily where possible (paths), except for TAP-Vid pickles, which
store decoded video.

* TAP-Vid pickles: DAVIS (dict name -> example), RGB-Stacking (list of examples) and Kinetics
  (list or dict, frames possibly JPEG bytes); ``points`` normalised to [0, 1] (x, y) and
  ``occluded`` (N, T). :func:`load_tapvid_pickle` yields :class:`TapVidExample` in pixels.
* Trajectory files (evo's formats): TUM (``t tx ty tz qx qy qz qw``), KITTI (12 numbers per line,
  a row-major 3x4 pose), EuRoC ground-truth CSV (``t[ns], p xyz, q wxyz, ...``).
* TUM RGB-D sequences: ``rgb.txt`` + ``groundtruth.txt``, associated by nearest timestamp.
* ``/work/shared/data``: ``kitti_seq1`` (KITTI poses + calib), ``badja_davis`` (BADJA joints,
  segA metric), ``mgtv_corners`` (planar-region corner tracks).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

SHARED_DATA = Path(os.environ.get("WORLDTRACK_SHARED",
                                  Path(__file__).resolve().parents[2] / "shared")) / "data"


def shared_data_dir() -> Path | None:
    """The shared real-data folder, or ``None`` when it is absent."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None


# ---------------------------------------------------------------------------------------- poses
def quat_to_rot(q_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) in x, y, z, w order -> rotation matrices (..., 3, 3)."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _poses(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    out = np.tile(np.eye(4), (len(rot), 1, 1))
    out[:, :3, :3] = rot
    out[:, :3, 3] = trans
    return out


def _numeric_rows(path: Path, delimiter: str | None = None) -> np.ndarray:
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line or line[0] in "#%":
                continue
            rows.append([float(v) for v in (line.split(delimiter) if delimiter else line.replace(",", " ").split())])
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return np.asarray(rows, dtype=np.float64)


def read_tum_trajectory(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """TUM format -> (timestamps (T,) s, cam_to_world (T, 4, 4))."""
    a = _numeric_rows(Path(path))
    if a.shape[1] != 8:
        raise ValueError(f"{path}: TUM lines have 8 numbers, found {a.shape[1]}")
    return a[:, 0], _poses(quat_to_rot(a[:, 4:8]), a[:, 1:4])


def read_kitti_trajectory(path: str | os.PathLike) -> np.ndarray:
    """KITTI format (12 numbers per line, row-major 3x4) -> cam_to_world (T, 4, 4)."""
    a = _numeric_rows(Path(path))
    if a.shape[1] != 12:
        raise ValueError(f"{path}: KITTI lines have 12 numbers, found {a.shape[1]}")
    out = np.tile(np.eye(4), (len(a), 1, 1))
    out[:, :3, :] = a.reshape(-1, 3, 4)
    return out


def read_euroc_groundtruth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """EuRoC ground-truth CSV (t[ns], p_xyz, q_wxyz, ...) -> (timestamps s, body-to-world poses)."""
    a = _numeric_rows(Path(path), delimiter=",")
    q_xyzw = a[:, [5, 6, 7, 4]]
    return a[:, 0] * 1e-9, _poses(quat_to_rot(q_xyzw), a[:, 1:4])


def associate(t_a: np.ndarray, t_b: np.ndarray, max_diff: float = 0.02) -> np.ndarray:
    """Pair timestamps as TUM's ``associate.py`` does: greedily by smallest |t_a - t_b|, each
    stamp used once, pairs further apart than ``max_diff`` seconds dropped.

    Returns (M, 2) index pairs sorted by ``t_a``.
    """
    t_a, t_b = np.asarray(t_a, np.float64), np.asarray(t_b, np.float64)
    # Candidate pairs: every a with its neighbours in sorted b (enough for greedy matching).
    order = np.argsort(t_b)
    sb = t_b[order]
    cands = []
    pos = np.searchsorted(sb, t_a)
    for i, p in enumerate(pos):
        for j in range(max(0, p - 2), min(len(sb), p + 2)):
            d = abs(t_a[i] - sb[j])
            if d < max_diff:
                cands.append((d, i, int(order[j])))
    cands.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in cands:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    pairs.sort()
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


# -------------------------------------------------------------------------------- TUM RGB-D seq
#: Factory intrinsics of the TUM RGB-D Kinect cameras (fx, fy, cx, cy), from the dataset's page.
TUM_INTRINSICS = {"freiburg1": (517.3, 516.5, 318.6, 255.3),
                  "freiburg2": (520.9, 521.0, 325.1, 249.7),
                  "freiburg3": (535.4, 539.2, 320.1, 247.6)}
TUM_DEFAULT_INTRINSICS = (525.0, 525.0, 319.5, 239.5)


@dataclass
class PoseSequence:
    """Frames with ground-truth cameras: ``frames`` paths, ``cam_to_world`` (T, 4, 4) OpenCV axes,
    ``K`` (T, 3, 3), ``timestamps`` (T,) seconds (frame index / fps when unknown)."""

    name: str
    frames: list[Path]
    cam_to_world: np.ndarray
    K: np.ndarray
    timestamps: np.ndarray
    image_size: tuple[int, int]


def _k(fx: float, fy: float, cx: float, cy: float, t: int) -> np.ndarray:
    return np.tile(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64), (t, 1, 1))


def _image_size(path: Path) -> tuple[int, int]:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return int(img.shape[1]), int(img.shape[0])


def load_tum_sequence(root: str | os.PathLike, max_diff: float = 0.02,
                      intrinsics: Sequence[float] | None = None) -> PoseSequence:
    """A TUM RGB-D style folder: ``rgb.txt`` (``t path``) + ``groundtruth.txt`` (TUM poses).

    Images without a ground-truth pose within ``max_diff`` s are dropped. Intrinsics: given, or
    the Freiburg camera named in the folder, or the dataset's default (525, 525, 319.5, 239.5).
    """
    root = Path(root)
    stamps, files = [], []
    with open(root / "rgb.txt") as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                t, f = line.split()[:2]
                stamps.append(float(t))
                files.append(root / f)
    gt_t, gt_pose = read_tum_trajectory(root / "groundtruth.txt")
    pairs = associate(np.array(stamps), gt_t, max_diff)
    if len(pairs) == 0:
        raise ValueError(f"{root}: no rgb frame has a ground-truth pose within {max_diff} s")
    if intrinsics is None:
        intrinsics = next((v for k, v in TUM_INTRINSICS.items() if k in root.name),
                          TUM_DEFAULT_INTRINSICS)
    frames = [files[i] for i in pairs[:, 0]]
    return PoseSequence(root.name, frames, gt_pose[pairs[:, 1]], _k(*intrinsics, len(frames)),
                        np.array(stamps)[pairs[:, 0]], _image_size(frames[0]))


# ---------------------------------------------------------------------------------- KITTI seq
def load_kitti_sequence(root: str | os.PathLike, fps: float = 10.0) -> PoseSequence:
    """A KITTI odometry excerpt: ``image_*/NNNNNN.png``, ``poses.txt`` (cam-to-world 3x4 rows),
    ``calib.txt`` (first line P0 -> K = P0[:, :3])."""
    root = Path(root)
    img_dir = next((d for d in sorted(root.glob("image_*")) if d.is_dir()), None)
    if img_dir is None:
        raise ValueError(f"{root}: no image_* folder")
    frames = sorted(img_dir.glob("*.png"))
    poses = read_kitti_trajectory(root / "poses.txt")
    with open(root / "calib.txt") as fh:
        first = fh.readline().split()
    vals = [float(v) for v in (first[1:] if first[0].endswith(":") else first)]
    p0 = np.array(vals[:12]).reshape(3, 4)
    if len(frames) != len(poses):
        raise ValueError(f"{root}: {len(frames)} images but {len(poses)} poses")
    k = np.tile(p0[:, :3], (len(frames), 1, 1))
    return PoseSequence(root.name, frames, poses, k, np.arange(len(frames)) / fps,
                        _image_size(frames[0]))


# ----------------------------------------------------------------------------- 2D point tracks
@dataclass
class TapVidExample:
    """One annotated video: ``video`` (T, H, W, 3) uint8 RGB (or ``None`` with ``frames``
    paths / ``video_path``), ``points`` (N, T, 2) pixels, ``occluded`` (N, T), ``query`` (N, 3)
    ``[t, x, y]`` ('first' mode: the first visible frame), optional ``eval_mask`` (N, T)."""

    name: str
    points: np.ndarray
    occluded: np.ndarray
    query: np.ndarray
    image_size: tuple[int, int]
    video: np.ndarray | None = None
    frames: list[Path] | None = None
    video_path: Path | None = None
    eval_mask: np.ndarray | None = None
    seg_area: np.ndarray | None = None


def queries_first(points: np.ndarray, occluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TAP-Vid 'first' sampling: for each track with any visible frame, the first visible frame.

    Returns ``(keep (N,) bool, query (M, 3) [t, x, y])``.
    """
    vis = ~np.asarray(occluded, bool)
    keep = vis.any(axis=1)
    first = np.argmax(vis, axis=1)
    idx = np.nonzero(keep)[0]
    q = np.stack([first[idx].astype(np.float64), points[idx, first[idx], 0],
                  points[idx, first[idx], 1]], axis=1)
    return keep, q.astype(np.float32)


def _decode_frames(frames) -> np.ndarray:
    if len(frames) and isinstance(frames[0], (bytes, bytearray)):
        import cv2

        out = []
        for b in frames:
            img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError("undecodable JPEG frame in TAP-Vid pickle")
            out.append(img[:, :, ::-1])
        return np.stack(out)
    return np.asarray(frames)


def load_tapvid_pickle(path: str | os.PathLike) -> Iterator[TapVidExample]:
    """Examples from a TAP-Vid pickle (DAVIS dict, RGB-Stacking list, Kinetics list/dict).

    Tracks never visible are dropped, as TAP-Vid's 'first' sampling does.

    Security: pickles can execute code; only load files from a trusted source.
    """
    with open(path, "rb") as fh:
        data = pickle.load(fh)
    items = data.items() if isinstance(data, dict) else ((f"{Path(path).stem}_{i:04d}", ex)
                                                         for i, ex in enumerate(data))
    for name, ex in items:
        for key in ("video", "points", "occluded"):
            if key not in ex:
                raise ValueError(f"{path}: example {name!r} has no {key!r}")
        video = _decode_frames(ex["video"])
        t, h, w = video.shape[:3]
        pts = np.asarray(ex["points"], np.float64) * np.array([w, h])
        occ = np.asarray(ex["occluded"], bool)
        if pts.shape[:2] != occ.shape or occ.shape[1] != t:
            raise ValueError(f"{path}: example {name!r}: points {pts.shape} / occluded {occ.shape} "
                             f"do not match {t} frames")
        # TAP-Vid normalises with x/W over the image extent; pixel centres are at (i + 0.5)/W.
        pts = pts - 0.5
        keep, q = queries_first(pts, occ)
        yield TapVidExample(str(name), pts[keep].astype(np.float32), occ[keep], q, (w, h),
                            video=video)


def load_badja(root: str | os.PathLike, name: str) -> TapVidExample:
    """A BADJA/DAVIS animal from ``badja_davis``: joints as tracks, queries at each joint's first
    visible annotated frame, ``eval_mask`` = annotated & valid frames, ``seg_area`` (T,)."""
    root = Path(root)
    d = np.load(root / f"{name}.npz", allow_pickle=False)
    pts = d["points"].astype(np.float32)
    valid = d["valid"].astype(bool)
    occ = d["occluded"].astype(bool) | ~valid
    annotated = d["annotated"].astype(bool)
    w, h = int(d["width"]), int(d["height"])
    keep, q = queries_first(np.nan_to_num(pts), occ)
    frame_dir = root / "frames" / name
    frames = sorted(frame_dir.glob("*.jpg")) + sorted(frame_dir.glob("*.png")) if frame_dir.is_dir() else None
    video_path = root / "frames" / f"{name}.mp4"
    ex = TapVidExample(name, np.nan_to_num(pts[keep]), occ[keep], q, (w, h),
                       frames=frames or None, video_path=video_path if video_path.is_file() else None,
                       eval_mask=(valid & annotated[None, :])[keep], seg_area=d["seg_area"])
    if ex.frames is None and ex.video_path is None:
        raise ValueError(f"{root}: no frames for {name}")
    return ex


def badja_metrics(ex: TapVidExample, pred_tracks: np.ndarray) -> dict[str, float]:
    """BADJA accuracy of predicted joint tracks (N, T, 2), over annotated, visible frames after
    each query frame: ``segA`` (fraction within 0.2·sqrt(seg_area) px; only frames with a
    segmentation area, NaN when the set has none, as ``bear`` here) and ``acc_3px``."""
    n, t = ex.occluded.shape
    q = np.round(ex.query[:, 0]).astype(int)
    after = np.arange(t)[None, :] > q[:, None]
    m = ex.eval_mask & ~ex.occluded & after
    area = np.asarray(ex.seg_area if ex.seg_area is not None else np.full(t, np.nan), np.float64)
    m_seg = m & np.isfinite(area)[None, :]
    d = np.linalg.norm(np.asarray(pred_tracks, np.float64) - ex.points, axis=-1)
    d = np.where(np.isfinite(d), d, np.inf)
    thr = 0.2 * np.sqrt(np.nan_to_num(area))[None, :]
    return {"segA": float(np.mean((d < thr)[m_seg])) if m_seg.any() else float("nan"),
            "acc_3px": float(np.mean((d < 3.0)[m])) if m.any() else float("nan"),
            "n_eval": float(m.sum())}


def load_mgtv_corners(root: str | os.PathLike) -> TapVidExample:
    """``mgtv_corners``: 4 corners of a planar region per frame, all visible, queried at frame 0."""
    root = Path(root)
    rows = []
    with open(root / "groundtruth.txt") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 5:
                rows.append([[float(v) for v in p.split(",")] for p in parts[1:]])
    pts = np.asarray(rows, np.float32).transpose(1, 0, 2)  # (4, T, 2)
    occ = np.zeros(pts.shape[:2], bool)
    import cv2

    cap = cv2.VideoCapture(str(root / "baseline.mp4"))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    keep, q = queries_first(pts, occ)
    return TapVidExample("mgtv_corners", pts, occ, q, (w, h), video_path=root / "baseline.mp4")


def materialise_frames(ex: TapVidExample, out_dir: str | os.PathLike) -> Path:
    """Write an example's frames as ``out_dir/frames/00000.png`` (the layout baselines read) and
    return ``out_dir``. Existing complete output is reused."""
    import cv2

    out = Path(out_dir)
    fdir = out / "frames"
    done = out / ".frames_done"
    if done.is_file():
        return out
    fdir.mkdir(parents=True, exist_ok=True)
    i = 0
    if ex.video is not None:
        for i, f in enumerate(ex.video):
            cv2.imwrite(str(fdir / f"{i:05d}.png"), np.ascontiguousarray(f[:, :, ::-1]))
    elif ex.frames:
        for i, p in enumerate(ex.frames):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            cv2.imwrite(str(fdir / f"{i:05d}.png"), img)
    else:
        cap = cv2.VideoCapture(str(ex.video_path))
        while True:
            ok, img = cap.read()
            if not ok:
                break
            cv2.imwrite(str(fdir / f"{i:05d}.png"), img)
            i += 1
        cap.release()
    done.write_text("ok")
    return out
