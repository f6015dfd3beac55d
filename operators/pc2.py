"""PC2 point caches (read by Blender's Mesh Cache modifier). Pure numpy, no bpy.

Layout (little-endian): a 32-byte header ``b"POINTCACHE2\\0"``, int32 version (1), int32 vertex
count, float32 start frame, float32 sampling (frames per sample), int32 sample count; then float32
``x, y, z`` per vertex, per sample (sample-major). Writing goes one vertex chunk at a time (one
write per frame per chunk), so memory stays bounded by the chunk size, and the file appears
atomically (``<name>.partial`` then rename).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable

import numpy as np

MAGIC = b"POINTCACHE2\0"
HEADER = struct.Struct("<12siiffi")
assert HEADER.size == 32


def write_pc2(path: str | os.PathLike, chunks: Iterable[tuple[slice, np.ndarray]], n_verts: int,
              n_frames: int, start: float = 0.0, sampling: float = 1.0) -> Path:
    """Write a PC2 file from vertex chunks.

    ``chunks`` yields ``(vertex_slice, positions)`` with ``positions`` of shape
    (n_frames, len(vertex_slice), 3) in Blender units (mesh-local coordinates). Vertices never
    yielded stay at 0. Returns the final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    total = HEADER.size + 12 * int(n_verts) * int(n_frames)
    try:
        with open(partial, "wb") as fh:
            fh.write(HEADER.pack(MAGIC, 1, int(n_verts), float(start), float(sampling), int(n_frames)))
            fh.truncate(total)
            for sl, pos in chunks:
                pos = np.asarray(pos, dtype="<f4")
                if pos.shape != (n_frames, sl.stop - sl.start, 3):
                    raise ValueError(f"chunk {sl} has shape {pos.shape}, expected "
                                     f"({n_frames}, {sl.stop - sl.start}, 3)")
                # One contiguous write per frame (plain writes, not a memory map, so the output
                # never counts against this process's memory).
                for t in range(n_frames):
                    fh.seek(HEADER.size + 12 * (t * int(n_verts) + sl.start))
                    fh.write(np.ascontiguousarray(pos[t]).tobytes())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def read_pc2_header(path: str | os.PathLike) -> dict:
    """Header fields: version, n_verts, start, sampling, n_frames."""
    with open(path, "rb") as fh:
        magic, version, n, start, sampling, nf = HEADER.unpack(fh.read(HEADER.size))
    if magic != MAGIC:
        raise ValueError(f"{path} is not a PC2 file")
    return {"version": version, "n_verts": n, "start": start, "sampling": sampling, "n_frames": nf}


def read_pc2(path: str | os.PathLike) -> np.ndarray:
    """Memory-mapped (n_frames, n_verts, 3) float32 view of a PC2 file."""
    h = read_pc2_header(path)
    return np.memmap(path, dtype="<f4", mode="r", offset=HEADER.size,
                     shape=(h["n_frames"], h["n_verts"], 3))


def hold_fill(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill unknown (NaN) positions of (k,T,3) tracks by holding the nearest earlier known frame
    (or the first known one before it appears). Tracks never known go to 0. Returns
    (filled, known mask (k,T))."""
    x = np.asarray(x, dtype=np.float32)
    k, T = x.shape[:2]
    ok = np.isfinite(x).all(-1)
    idx = np.where(ok, np.arange(T)[None, :], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    first = ok.argmax(1)
    idx = np.where(idx < 0, first[:, None], idx)
    out = np.take_along_axis(x, idx[..., None], axis=1)
    out[~ok.any(1)] = 0.0
    return out, ok


def track_position_chunks(tracks_3d: np.ndarray, ids: np.ndarray, transform: np.ndarray | None = None,
                          chunk: int = 65536) -> Iterable[tuple[slice, np.ndarray]]:
    """Yield ``(vertex_slice, (T,k,3) positions)`` for the tracks ``ids`` of a (N,T,3) array
    (e.g. a memory-mapped track file), unknown positions held (see :func:`hold_fill`), optionally
    mapped through a 4x4 ``transform`` (e.g. world scale)."""
    ids = np.asarray(ids, dtype=np.int64)
    for s in range(0, len(ids), chunk):
        sel = ids[s:s + chunk]
        contiguous = len(sel) and sel[-1] - sel[0] + 1 == len(sel)
        x = np.asarray(tracks_3d[sel[0]:sel[-1] + 1] if contiguous else tracks_3d[sel])
        x, _ = hold_fill(x)
        if transform is not None:
            x = x @ np.asarray(transform[:3, :3], np.float32).T + np.asarray(transform[:3, 3], np.float32)
        yield slice(s, s + len(sel)), np.ascontiguousarray(x.transpose(1, 0, 2))
