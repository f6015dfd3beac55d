"""The track file: the data contract between the Worldtrack engine and Blender.

A track file is a ``.npz`` archive (ZIP, members stored uncompressed so that they can be
memory-mapped) holding these arrays, all in the conventions below:

========================  ==========  ======================================================
name                      dtype       shape / meaning
========================  ==========  ======================================================
``query``                 float32     (N, 3) ``[t, x, y]``: frame index (0-based within the
                                      tracked range) and pixel where each track was seeded
``tracks_2d``             float32     (N, T, 2) pixel ``x, y`` per frame
``visible``               bool        (N, T) the point is seen (not occluded, in frame)
``confidence``            float32     (N, T) in [0, 1]
``tracks_3d``             float32     (N, T, 3) world position of the surface point, NaN if
                                      unknown
``cam_to_world``          float32     (T, 4, 4) camera pose per frame, OpenCV camera axes
                                      (x right, y down, z forward); NaN rows if unsolved
``K``                     float32     (T, 3, 3) pixel intrinsics per frame
``group`` (optional)      int32       (N,) −1 static background, k ≥ 0 moving group k (rigid
                                      groups first, then the non-rigid group: solve report)
``colors`` (optional)     uint8       (N, 3) RGB of the query pixel
``reproj_error`` (opt.)   float32     (N,) RMS reprojection error of each track, px
``depth`` (optional)      float32     (T, H, W) z-depth along the camera's +z axis
``metadata``              unicode     0-d array holding a JSON document (see below)
========================  ==========  ======================================================

Pixel coordinates follow OpenCV: x right, y down, the centre of the top-left pixel is (0, 0),
in the resolution of the input footage (``metadata["image_size"]`` = ``[width, height]``).
World units are arbitrary but consistent (metres for ground truth).

Metadata keys (``REQUIRED_METADATA`` are mandatory): ``format`` (always ``"worldtrack.trackfile"``),
``version`` (``FORMAT_VERSION``), ``image_size`` ``[W, H]``, ``frame_range`` ``[first, last]``
(inclusive source frame numbers; frame index t is source frame ``first + t``), ``fps``,
``source`` ``{"path", "hash"}``, ``engine`` ``{"version", "settings"}``, ``timings``
(seconds per stage), and optionally ``distortion`` ``{"model": "polynomial", "k1", "k2", "k3"}``
(Blender's polynomial model on normalised coordinates), ``solve`` (the solve report) and
``ground_truth`` (true when the file holds rendered ground truth, not an estimate).

Memory: :class:`TrackFileWriter` preallocates every array as an ``.npy`` memory map on disk, lets
the producer fill any slice (e.g. one chunk of tracks at a time) and finally packs them into the
archive; :func:`load_trackfile` memory-maps the stored members, so a reader touches only the
slices it indexes. Neither ever needs a whole dense result in RAM: the writer's initial fill,
:func:`validate` and the packing work in blocks of rows (``block_bytes``, default
``_BLOCK_BYTES`` = 16 MiB) and drop each block's pages of a disk memory map from the process
afterwards (:func:`engine.pages.release_pages`), so their resident memory stays about one block
whatever the file size. The final file appears atomically (written as ``<name>.partial`` and
renamed), so a cancelled run never leaves a file that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .pages import release_pages

FORMAT_NAME = "worldtrack.trackfile"
FORMAT_VERSION = 1
REQUIRED_METADATA = ("format", "version", "image_size", "frame_range", "fps")

#: name -> (dtype, shape as a function of N, T and (H, W))
_SPEC: dict[str, tuple[np.dtype, Any]] = {
    "query": (np.dtype(np.float32), lambda n, t, hw: (n, 3)),
    "tracks_2d": (np.dtype(np.float32), lambda n, t, hw: (n, t, 2)),
    "visible": (np.dtype(np.bool_), lambda n, t, hw: (n, t)),
    "confidence": (np.dtype(np.float32), lambda n, t, hw: (n, t)),
    "tracks_3d": (np.dtype(np.float32), lambda n, t, hw: (n, t, 3)),
    "cam_to_world": (np.dtype(np.float32), lambda n, t, hw: (t, 4, 4)),
    "K": (np.dtype(np.float32), lambda n, t, hw: (t, 3, 3)),
    "group": (np.dtype(np.int32), lambda n, t, hw: (n,)),
    "colors": (np.dtype(np.uint8), lambda n, t, hw: (n, 3)),
    "reproj_error": (np.dtype(np.float32), lambda n, t, hw: (n,)),
    "depth": (np.dtype(np.float32), lambda n, t, hw: (t, hw[1], hw[0])),
}
REQUIRED_ARRAYS = ("query", "tracks_2d", "visible", "confidence", "tracks_3d", "cam_to_world", "K")
OPTIONAL_ARRAYS = ("group", "colors", "reproj_error", "depth")
#: Default block size (bytes) of the writer's fill, validation and packing. Small enough to be
#: negligible next to the tracker (and to a memory limit), large enough that the per-block
#: overhead (a numpy call and an ``madvise``) is noise.
_BLOCK_BYTES = 16 << 20


class TrackFileError(ValueError):
    """A track file is missing, unreadable or does not follow the contract."""


@dataclass
class TrackData:
    """One track file's content. Arrays may be numpy arrays or read-only memory maps."""

    query: np.ndarray
    tracks_2d: np.ndarray
    visible: np.ndarray
    confidence: np.ndarray
    tracks_3d: np.ndarray
    cam_to_world: np.ndarray
    K: np.ndarray
    metadata: dict = field(default_factory=dict)
    group: np.ndarray | None = None
    colors: np.ndarray | None = None
    reproj_error: np.ndarray | None = None
    depth: np.ndarray | None = None

    @property
    def n_tracks(self) -> int:
        return int(self.tracks_2d.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.cam_to_world.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in pixels of the source footage."""
        w, h = self.metadata["image_size"]
        return int(w), int(h)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for f in fields(self):
            if f.name == "metadata":
                continue
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = v
        return out

    def iter_track_chunks(self, chunk: int = 65536) -> Iterator[tuple[slice, "TrackData"]]:
        """Yield ``(slice, TrackData)`` views over consecutive blocks of at most ``chunk`` tracks.

        Per-frame arrays (cameras, intrinsics, depth) are shared, not copied.
        """
        for s in range(0, self.n_tracks, chunk):
            sl = slice(s, min(s + chunk, self.n_tracks))
            kw = {}
            for f in fields(self):
                v = getattr(self, f.name)
                if f.name in ("query", "tracks_2d", "visible", "confidence", "tracks_3d", "group",
                              "colors", "reproj_error") and v is not None:
                    v = v[sl]
                kw[f.name] = v
            yield sl, TrackData(**kw)


def make_metadata(image_size: tuple[int, int], frame_range: tuple[int, int], fps: float,
                  **extra: Any) -> dict:
    """Build a metadata dict with the mandatory keys filled in."""
    md = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "frame_range": [int(frame_range[0]), int(frame_range[1])],
        "fps": float(fps),
        "source": {"path": "", "hash": ""},
        "engine": {"version": _engine_version(), "settings": {}},
        "timings": {},
    }
    md.update(extra)
    return md


def _engine_version() -> str:
    from . import __version__

    return __version__


# ----------------------------------------------------------------------------------- validation
def _check_metadata(md: Any) -> None:
    if not isinstance(md, dict):
        raise TrackFileError("metadata must be a JSON object")
    missing = [k for k in REQUIRED_METADATA if k not in md]
    if missing:
        raise TrackFileError(f"metadata is missing required keys: {', '.join(missing)}")
    if md["format"] != FORMAT_NAME:
        raise TrackFileError(f"not a Worldtrack track file (format={md['format']!r})")
    v = md["version"]
    if not isinstance(v, int) or isinstance(v, bool):
        raise TrackFileError(f"metadata 'version' must be an integer, got {v!r}")
    if v > FORMAT_VERSION:
        raise TrackFileError(
            f"track file version {v} is newer than this Worldtrack supports ({FORMAT_VERSION}); "
            "update Worldtrack")
    if v < 1:
        raise TrackFileError(f"invalid track file version {v}")
    size = md["image_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and s > 0 for s in size)):
        raise TrackFileError(f"metadata 'image_size' must be [width, height] > 0, got {size!r}")
    fr = md["frame_range"]
    if (not isinstance(fr, (list, tuple)) or len(fr) != 2
            or not all(isinstance(s, int) for s in fr) or fr[1] < fr[0]):
        raise TrackFileError(f"metadata 'frame_range' must be [first, last], got {fr!r}")
    if not isinstance(md["fps"], (int, float)) or not md["fps"] > 0:
        raise TrackFileError(f"metadata 'fps' must be > 0, got {md['fps']!r}")


def _row_slices(*arrays: np.ndarray, block_bytes: int | None = None) -> Iterator[slice]:
    """Slices of leading rows, the same for every array, each block about ``block_bytes``
    (default ``_BLOCK_BYTES``; at least one row) in the widest array (memory-bounded scans of
    arrays that share their first axis)."""
    budget = int(block_bytes or _BLOCK_BYTES)
    n = arrays[0].shape[0] if arrays[0].ndim else 1
    row = max(max(1, a.nbytes // max(1, a.shape[0] if a.ndim else 1)) for a in arrays)
    step = max(1, budget // row)
    for s in range(0, max(n, 1), step):
        yield slice(s, s + step)


def _blocks(a: np.ndarray, block_bytes: int | None = None) -> Iterator[np.ndarray]:
    """Blocks of rows of ``a`` of about ``block_bytes`` each; after each block has been used
    (when the consumer asks for the next one, or stops) its pages are dropped from the process
    if ``a`` is a disk memory map."""
    if a.ndim == 0:
        yield a
        return
    try:
        for sl in _row_slices(a, block_bytes=block_bytes):
            yield a[sl]
            release_pages(a)
    finally:
        release_pages(a)   # also when the consumer stops early (an error found, an exception)


def _fill(a: np.ndarray, value, block_bytes: int | None = None) -> None:
    """``a[...] = value`` block by block, dropping each written block's pages from the process
    (for a disk memory map the data goes to the file; the resident set stays one block)."""
    for blk in _blocks(a, block_bytes):
        blk[...] = value


def validate(data: TrackData, block_bytes: int | None = None) -> None:
    """Raise :class:`TrackFileError` with a clear message if ``data`` breaks the contract.

    Per-track arrays are scanned in blocks of about ``block_bytes`` (default ``_BLOCK_BYTES``);
    the pages of disk memory maps are dropped from the process after each block, so validating
    a file of any size needs about one block of memory.
    """
    _check_metadata(data.metadata)
    arrays = data.arrays()
    for name in REQUIRED_ARRAYS:
        if name not in arrays:
            raise TrackFileError(f"required array '{name}' is missing")
    n = arrays["tracks_2d"].shape[0] if arrays["tracks_2d"].ndim == 3 else -1
    t = arrays["cam_to_world"].shape[0] if arrays["cam_to_world"].ndim == 3 else -1
    if n < 0 or t < 0:
        raise TrackFileError(
            f"tracks_2d must be (N,T,2) and cam_to_world (T,4,4); got {arrays['tracks_2d'].shape} "
            f"and {arrays['cam_to_world'].shape}")
    if t < 1:
        raise TrackFileError("the track file has no frames (T = 0)")
    hw = tuple(data.metadata["image_size"])
    fr = data.metadata["frame_range"]
    if fr[1] - fr[0] + 1 != t:
        raise TrackFileError(f"frame_range {fr} spans {fr[1] - fr[0] + 1} frames but arrays hold {t}")
    for name, a in arrays.items():
        dtype, shape_fn = _SPEC[name]
        want = shape_fn(n, t, hw)
        if tuple(a.shape) != want:
            raise TrackFileError(f"'{name}' has shape {tuple(a.shape)}, expected {want}")
        if a.dtype != dtype:
            raise TrackFileError(f"'{name}' has dtype {a.dtype}, expected {dtype}")
    # Per-track arrays block by block so memory stays bounded; per-frame ones are small.
    q = arrays["query"]
    if not all(np.isfinite(blk).all() for blk in _blocks(q, block_bytes)):
        raise TrackFileError("'query' contains NaN or infinite values (query must be finite)")
    for name in ("cam_to_world", "K"):
        if not np.isfinite(arrays[name]).all():
            bad = "camera poses" if name == "cam_to_world" else name
            raise TrackFileError(f"'{name}' contains NaN or infinite values ({bad} must be finite)")
    c2w = arrays["cam_to_world"]
    if not np.allclose(c2w[:, 3, :], [0, 0, 0, 1], atol=1e-5):
        raise TrackFileError("cam_to_world bottom rows must be [0, 0, 0, 1]")
    r = c2w[:, :3, :3].astype(np.float64)
    err = np.abs(np.einsum("tij,tkj->tik", r, r) - np.eye(3)).max()
    if err > 1e-3:
        raise TrackFileError(f"cam_to_world rotations are not orthonormal (max error {err:.2g})")
    k = arrays["K"]
    if (k[:, 0, 0] <= 0).any() or (k[:, 1, 1] <= 0).any() or not np.allclose(k[:, 2], [0, 0, 1]):
        raise TrackFileError("K must have positive focal lengths and last row [0, 0, 1]")
    if n and any(((blk[:, 0] < 0) | (blk[:, 0] > t - 1)).any() for blk in _blocks(q, block_bytes)):
        raise TrackFileError(f"query frame indices must lie in [0, {t - 1}]")
    for blk in _blocks(arrays["confidence"], block_bytes):
        if blk.size and (np.isnan(blk).any() or (blk < 0).any() or (blk > 1).any()):
            raise TrackFileError("confidence must lie in [0, 1] (no NaN)")
    xy, vis = arrays["tracks_2d"], arrays["visible"]
    try:
        for sl in _row_slices(xy, vis, block_bytes=block_bytes):
            fin = np.isfinite(xy[sl])       # bool temporaries only, no copy of the block
            if not ((fin[..., 0] & fin[..., 1]) | ~vis[sl]).all():
                raise TrackFileError("tracks_2d has NaN/inf at frames marked visible")
            release_pages(xy)
            release_pages(vis)
    finally:
        release_pages(xy)
        release_pages(vis)
    if "group" in arrays and n and any((blk < -1).any()
                                       for blk in _blocks(arrays["group"], block_bytes)):
        raise TrackFileError("group ids must be -1 (static) or >= 0")


# -------------------------------------------------------------------------------------- writing
class TrackFileWriter:
    """Write a track file whose arrays are filled slice by slice, with bounded memory.

    Usage::

        with TrackFileWriter(path, n_tracks=N, n_frames=T, metadata=md) as w:
            w["tracks_2d"][a:b] = chunk          # any slice, any order
            ...
        # on normal exit the file is validated and appears atomically at ``path``;
        # on an exception (e.g. KeyboardInterrupt) nothing appears and the scratch is removed.

    Required arrays start as: NaN for tracks/3D, False for visibility, 0 for confidence,
    identity cameras, and K must be filled by the caller. Optional arrays are created on demand
    with :meth:`add` (e.g. ``w.add("group")``).

    Memory: the writer's own work (the initial fill, the final validation and packing) goes in
    blocks of about ``block_bytes`` (default ``_BLOCK_BYTES``, 16 MiB) and drops each block's
    pages from the process, so it needs about one block of memory whatever N x T; what the
    producer writes stays resident until it calls :meth:`release` (e.g. after each block) or
    :meth:`close` does. The output does not depend on ``block_bytes``.
    """

    def __init__(self, path: str | os.PathLike, n_tracks: int, n_frames: int, metadata: dict,
                 scratch_dir: str | os.PathLike | None = None, block_bytes: int | None = None):
        if block_bytes is not None and int(block_bytes) <= 0:
            raise ValueError(f"block_bytes must be positive, got {block_bytes}")
        self.path = Path(path)
        self.n, self.t = int(n_tracks), int(n_frames)
        self.metadata = dict(metadata)
        self.block_bytes = None if block_bytes is None else int(block_bytes)
        parent = Path(scratch_dir) if scratch_dir else self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=".wt-", dir=parent))
        self._arrays: dict[str, np.ndarray] = {}
        try:
            for name in REQUIRED_ARRAYS:
                self.add(name)
            # the files start as zeros (sparse); NaN / identity are written block by block
            _fill(self["tracks_2d"], np.nan, self.block_bytes)
            _fill(self["tracks_3d"], np.nan, self.block_bytes)
            _fill(self["cam_to_world"], np.eye(4, dtype=np.float32), self.block_bytes)
        except BaseException:   # disk full, Ctrl-C: leave no scratch behind
            self.abort()
            raise

    def add(self, name: str) -> np.ndarray:
        """Create (or return) the on-disk array ``name``."""
        if name in self._arrays:
            return self._arrays[name]
        if name not in _SPEC:
            raise KeyError(f"unknown track-file array '{name}'")
        dtype, shape_fn = _SPEC[name]
        shape = shape_fn(self.n, self.t, tuple(self.metadata["image_size"]))
        arr = np.lib.format.open_memmap(self._tmp / f"{name}.npy", mode="w+", dtype=dtype,
                                        shape=shape)
        if name == "group":
            _fill(arr, -1, self.block_bytes)
        self._arrays[name] = arr
        return arr

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name] if name in self._arrays else self.add(name)

    def release(self, *names: str) -> None:
        """Drop the pages the producer has touched in the named arrays (all when none are
        named) from the process; what was written stays in the scratch files. Call it after
        each block a producer writes to keep its resident set at one block."""
        for name in names or tuple(self._arrays):
            release_pages(self._arrays[name])

    def close(self) -> Path:
        """Validate, pack and atomically publish the file; returns its path."""
        for a in self._arrays.values():
            a.flush()
        self.release()   # what the producer left resident; the data is in the files
        data = TrackData(metadata=self.metadata, **self._arrays)
        try:
            validate(data, self.block_bytes)
            _pack(self.path, data.arrays(), self.metadata, self.block_bytes)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the target path is left untouched."""
        self._arrays.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "TrackFileWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _pack(path: Path, arrays: dict[str, np.ndarray], metadata: dict,
          block_bytes: int | None = None) -> None:
    """Stream ``arrays`` into an uncompressed npz at ``path`` via ``path.partial`` + rename, in
    blocks of rows of about ``block_bytes`` (memory maps' pages dropped after each block). The
    bytes written do not depend on the block size."""
    partial = path.with_name(path.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, a in arrays.items():
                if not isinstance(a, np.ndarray):
                    a = np.asarray(a)   # (a memmap is kept as it is: its pages get released)
                with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array_header_2_0(
                        fh, {"descr": np.lib.format.dtype_to_descr(a.dtype),
                             "fortran_order": False, "shape": a.shape})
                    for blk in _blocks(a, block_bytes):
                        # C-order bytes of the rows; no copy when the block already is C-contiguous
                        fh.write(memoryview(np.ascontiguousarray(blk).reshape(-1).view(np.uint8)))
            md = np.array(json.dumps(metadata, default=_json_default))
            with zf.open("metadata.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, md, allow_pickle=False)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in track-file metadata")


def save_trackfile(path: str | os.PathLike, data: TrackData, block_bytes: int | None = None
                   ) -> Path:
    """Validate ``data`` and write it (atomically) to ``path``, in blocks of about
    ``block_bytes`` (default ``_BLOCK_BYTES``; the file does not depend on it)."""
    path = Path(path)
    validate(data, block_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    _pack(path, data.arrays(), data.metadata, block_bytes)
    return path


# -------------------------------------------------------------------------------------- reading
def _member_array(fp, zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, mmap: bool):
    if info.compress_type != zipfile.ZIP_STORED or not mmap:
        with zf.open(info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    fp.seek(info.header_offset)
    local = fp.read(30)
    if local[:4] != b"PK\x03\x04":
        raise TrackFileError(f"corrupt archive member {info.filename}")
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    fp.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    if dtype.hasobject:
        raise TrackFileError(f"'{info.filename}' holds Python objects; refusing to load")
    offset = fp.tell()
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")


def load_trackfile(path: str | os.PathLike, mmap: bool = True, check: bool = True) -> TrackData:
    """Read a track file. With ``mmap`` (default) arrays are read-only memory maps of the file.

    Raises :class:`TrackFileError` if the file is missing, is not a track file, or (with
    ``check``) breaks the contract.
    """
    path = Path(path)
    if not path.is_file():
        raise TrackFileError(f"track file not found: {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise TrackFileError(f"{path} is not a readable track file ({e})") from None
    arrays: dict[str, Any] = {}
    with zf, open(path, "rb") as fp:
        names = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        if "metadata" not in names:
            raise TrackFileError(f"{path} has no metadata; it is not a Worldtrack track file")
        try:
            md = json.loads(str(_member_array(fp, zf, names.pop("metadata"), path, False)))
        except (ValueError, zipfile.BadZipFile) as e:
            raise TrackFileError(f"{path}: metadata is not valid JSON ({e})") from None
        for name, info in names.items():
            if name not in _SPEC:
                continue  # forward compatible: ignore unknown members
            try:
                arrays[name] = _member_array(fp, zf, info, path, mmap)
            except (ValueError, zipfile.BadZipFile, OSError) as e:
                raise TrackFileError(f"{path}: array '{name}' is unreadable ({e})") from None
    missing = [n for n in REQUIRED_ARRAYS if n not in arrays]
    if missing:
        _check_metadata(md)
        raise TrackFileError(f"{path}: required arrays missing: {', '.join(missing)}")
    data = TrackData(metadata=md, **arrays)
    if check:
        try:
            validate(data)
        except TrackFileError as e:
            raise TrackFileError(f"{path}: {e}") from None
    return data
