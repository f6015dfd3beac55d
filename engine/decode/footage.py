"""Streaming footage reader: video files and image sequences, at an optional working resolution.

Frames are yielded one at a time as ``uint8`` RGB arrays ``(h, w, 3)`` at the *working*
resolution (the input downscaled so that its longer side is at most ``max_side``); nothing keeps
more than one decoded frame in memory, so long and 4K clips stay bounded.

Sources:
- video files (anything OpenCV's FFmpeg backend opens: mp4, mov, avi, mkv, ...);
- image sequences (png, jpg/jpeg, tif/tiff, exr): a folder of numbered images, a printf pattern
  (``frame_%04d.png``) or a Blender ``#`` pattern (``frame_####.png``).

Frame numbers: for a sequence, the number in each file name; for a video, 0-based frame index.
``frames=(first, last)`` selects an inclusive range of those numbers (either may be ``None``).

Pixel convention: OpenCV (x right, y down, centre of the top-left pixel is (0, 0)). The working
resolution maps to the input resolution by ``x_in = (x_work + 0.5) / scale - 0.5`` with
``scale = w / W`` (see :meth:`Footage.to_input_pixels`).

Colour space (``colorspace``): how decoded values become the 8-bit, display-like intensities the
tracker matches on (see :data:`COLORSPACES`):

- ``auto`` (default): 8-bit frames as they are, 16-bit integers as display-referred (top 8
  bits), float (EXR) as scene-linear with a plain display gamma 1/2.2 (clipped to [0, 1]);
- ``linear``: the values are scene-linear light; they get the sRGB OETF (the piecewise IEC
  61966-2-1 curve, not a plain gamma) after clipping to [0, 1] -- 8-bit, 16-bit and float alike;
- ``srgb``: the values are already display-encoded; used as they are (integers rescaled to
  8 bits with rounding, float clipped to [0, 1]);
- ``raw``: non-colour data; no transfer curve, only normalised: integers by their type's range,
  float by the clip's value range (0.5th..99.5th percentile of the first selected frame's finite
  values, the same for every frame so intensities stay comparable over time), clipped.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".mxf")
#: Accepted ``colorspace`` values (see the module docstring).
COLORSPACES = ("auto", "srgb", "linear", "raw")
#: Percentiles of the first frame's finite values that ``raw`` float data is stretched between.
RAW_PERCENTILES = (0.5, 99.5)


class DecodeError(ValueError):
    """The footage is missing, unreadable, unsupported or inconsistent."""


def _cv2():
    # EXR support in OpenCV is opt-in through this variable, read when cv2 is first imported.
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    import cv2

    return cv2


def _rescale_pixels(xy: np.ndarray, src: tuple[int, int], dst: tuple[int, int],
                    dtype=np.float32) -> np.ndarray:
    """Pixel coordinates (..., 2) at size ``src`` (W, H) -> size ``dst``; pixel centres map to
    pixel centres (OpenCV convention: the top-left pixel's centre is (0, 0))."""
    out = np.asarray(xy, dtype=dtype).copy()
    out[..., 0] = (out[..., 0] + 0.5) * (dst[0] / src[0]) - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * (dst[1] / src[1]) - 0.5
    return out


@dataclass
class Footage:
    """An opened clip. Cheap to create; frames are decoded lazily by :meth:`frames`."""

    path: Path
    kind: str                       # "video" or "sequence"
    input_size: tuple[int, int]     # (W, H) of the source frames, pixels
    work_size: tuple[int, int]      # (w, h) of the frames yielded, pixels
    frame_numbers: list[int]        # source frame numbers in the selected range (video: indices)
    fps: float
    files: list[Path] | None = None  # sequence only, aligned with frame_numbers
    colorspace: str = "auto"        # how values become 8-bit intensities (see COLORSPACES)
    value_range: tuple[float, float] | None = None  # raw float data: (lo, hi) mapped to 0..255
    source_bytes_per_px: int = 3    # decoded source frame, bytes per pixel (8-bit RGB: 3)

    @property
    def decode_bytes(self) -> int:
        """Peak bytes to decode and convert one input frame (the decoded frame, its float or
        integer working copies and the 8-bit result), for memory planning."""
        w, h = self.input_size
        return int(w * h * (4 * self.source_bytes_per_px + 3))

    @property
    def n_frames(self) -> int:
        return len(self.frame_numbers)

    @property
    def frame_range(self) -> tuple[int, int]:
        """Inclusive (first, last) source frame numbers."""
        return self.frame_numbers[0], self.frame_numbers[-1]

    @property
    def scale(self) -> float:
        """Working / input size ratio (<= 1)."""
        return self.work_size[0] / self.input_size[0]

    def to_input_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Map working-resolution pixel coordinates (..., 2) to input-resolution ones."""
        return _rescale_pixels(xy, self.work_size, self.input_size)

    def to_work_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_input_pixels`."""
        return _rescale_pixels(xy, self.input_size, self.work_size)

    def frames(self) -> Iterator[np.ndarray]:
        """Yield each selected frame as uint8 RGB (h, w, 3) at the working resolution."""
        if self.kind == "video":
            yield from self._video_frames()
        else:
            for f in self.files or []:
                yield self._resize(_read_image(f, self.input_size, self.colorspace,
                                               self.value_range))

    # ------------------------------------------------------------------ internals
    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        if (rgb.shape[1], rgb.shape[0]) == self.work_size:
            return rgb
        cv2 = _cv2()
        return cv2.resize(rgb, self.work_size, interpolation=cv2.INTER_AREA)

    def _video_frames(self) -> Iterator[np.ndarray]:
        cv2 = _cv2()
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DecodeError(f"cannot open video {self.path}")
        try:
            first, last = self.frame_range
            idx = 0
            if first > 0:
                # Seeking is unreliable on some codecs; grab() forward instead (no decode cost).
                while idx < first:
                    if not cap.grab():
                        raise DecodeError(f"{self.path}: video ended before frame {first}")
                    idx += 1
            while idx <= last:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    raise DecodeError(f"{self.path}: could not decode frame {idx} (corrupt or "
                                      "truncated video)")
                if (bgr.shape[1], bgr.shape[0]) != self.input_size:
                    raise DecodeError(f"{self.path}: frame {idx} is {bgr.shape[1]}x{bgr.shape[0]}, "
                                      f"expected {self.input_size[0]}x{self.input_size[1]}")
                yield self._resize(cv2.cvtColor(_to_uint8(bgr, self.colorspace, self.value_range),
                                                cv2.COLOR_BGR2RGB))
                idx += 1
        finally:
            cap.release()


def srgb_oetf(linear: np.ndarray) -> np.ndarray:
    """sRGB OETF (IEC 61966-2-1): scene-linear values in [0, 1] -> encoded values in [0, 1]
    (linear segment 12.92 x up to 0.0031308, else 1.055 x^(1/2.4) - 0.055); float32, values
    outside [0, 1] clipped first."""
    x = np.array(linear, dtype=np.float32)      # a copy (0-d for a scalar), worked in place
    return _oetf_inplace(np.clip(x, 0.0, 1.0, out=x))


def _oetf_inplace(x: np.ndarray) -> np.ndarray:
    """:func:`srgb_oetf` of float32 ``x`` already in [0, 1], overwriting ``x`` (a 4K float frame
    is 100 MB: no full-size temporaries besides a boolean mask)."""
    low = x <= 0.0031308
    low_vals = x[low] * np.float32(12.92)
    np.power(x, np.float32(1.0 / 2.4), out=x)
    x *= np.float32(1.055)
    x -= np.float32(0.055)
    x[low] = low_vals
    return x


def srgb_eotf(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srgb_oetf`: encoded values in [0, 1] -> scene-linear, float32."""
    v = np.clip(np.asarray(encoded, np.float32), 0.0, 1.0)
    return np.where(v <= 0.04045, v / 12.92,
                    np.power((v + 0.055) / 1.055, 2.4, dtype=np.float32)).astype(np.float32)


def _quantise(unit: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 with rounding to the nearest level (overwrites float32 input)."""
    x = unit if unit.dtype == np.float32 else unit.astype(np.float32)
    np.clip(x, 0.0, 1.0, out=x)
    x *= np.float32(255.0)
    x += np.float32(0.5)
    return x.astype(np.uint8)


_LUTS: dict[tuple[str, str], np.ndarray] = {}


def _int_lut(dtype: np.dtype, colorspace: str) -> np.ndarray:
    """uint8 lookup table over every value of an 8/16-bit integer type for ``colorspace``."""
    key = (np.dtype(dtype).str, colorspace)
    if key not in _LUTS:
        top = np.iinfo(dtype).max
        unit = (np.arange(top + 1, dtype=np.float64) / top).astype(np.float32)
        _LUTS[key] = _quantise(_oetf_inplace(unit) if colorspace == "linear" else unit)
    return _LUTS[key]


def _to_uint8(img: np.ndarray, colorspace: str = "auto",
              value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Decoded values -> uint8 intensities according to ``colorspace`` (module docstring)."""
    if colorspace == "auto":
        # The original guess, kept bit-identical (results and benchmarks depend on it).
        if img.dtype == np.uint8:
            return img
        if img.dtype == np.uint16:
            return (img >> 8).astype(np.uint8)
        # float (EXR, linear): clip to [0, 1] and apply a display gamma so matching sees contrast.
        f = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(f, 0.0, 1.0) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)
    if colorspace not in COLORSPACES:
        raise DecodeError(f"unknown colorspace {colorspace!r}; expected one of "
                          f"{', '.join(COLORSPACES)}")
    if img.dtype in (np.uint8, np.uint16):
        if img.dtype == np.uint8 and colorspace != "linear":
            return img
        return _int_lut(img.dtype, colorspace)[img]
    if img.dtype.kind not in "fiu":
        raise DecodeError(f"unsupported pixel type {img.dtype}")
    # one float32 working copy, modified in place (frames can be 4K floats)
    f = img.astype(np.float32)
    if colorspace == "raw" and value_range is not None:
        lo, hi = value_range
        np.nan_to_num(f, copy=False, nan=lo, posinf=hi, neginf=lo)
        f -= np.float32(lo)
        f /= np.float32(max(hi - lo, 1e-12))
        return _quantise(f)
    np.nan_to_num(f, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(f, 0.0, 1.0, out=f)
    return _quantise(_oetf_inplace(f) if colorspace == "linear" else f)


def _raw_range(img: np.ndarray) -> tuple[float, float] | None:
    """``raw`` normalisation range of float data: robust (lo, hi) of the finite values (None
    for integer data, which is normalised by its type's range)."""
    if img.dtype.kind != "f":
        return None
    v = img[np.isfinite(img)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, RAW_PERCENTILES))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _load_image(path: Path) -> np.ndarray:
    """The file's values as decoded (BGR channel order, 3 channels, source dtype)."""
    cv2 = _cv2()
    if not path.is_file():
        raise DecodeError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DecodeError(f"cannot read image {path} (corrupt or unsupported format)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img[:, :, :3]


def _read_image(path: Path, expect_size: tuple[int, int] | None, colorspace: str = "auto",
                value_range: tuple[float, float] | None = None) -> np.ndarray:
    cv2 = _cv2()
    img = _to_uint8(_load_image(path), colorspace, value_range)
    if expect_size is not None and (img.shape[1], img.shape[0]) != tuple(expect_size):
        raise DecodeError(f"{path} is {img.shape[1]}x{img.shape[0]} but the sequence's first "
                          f"frame is {expect_size[0]}x{expect_size[1]}: frames of different sizes")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def work_size_for(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """Working (w, h) for an input (W, H) so that max(w, h) <= max_side (aspect preserved)."""
    w, h = size
    if not max_side or max(w, h) <= max_side:
        return int(w), int(h)
    s = max_side / max(w, h)
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


# ----------------------------------------------------------------------------- sequences
_PRINTF = re.compile(r"%0?(\d*)d")
_HASHES = re.compile(r"#+")


def _pattern_regex(name: str) -> tuple[re.Pattern, str] | None:
    """Regex matching file names of a printf/# pattern; None if ``name`` is not a pattern."""
    m = _PRINTF.search(name) or _HASHES.search(name)
    if not m:
        return None
    if m.group(0).startswith("%"):
        width = int(m.group(1)) if m.group(1) else 0
    else:
        width = len(m.group(0))
    # Blender pads to the width but allows longer numbers; printf %04d does too.
    num = r"(-?\d{%d,})" % max(1, width) if width else r"(-?\d+)"
    rx = re.escape(name[:m.start()]) + num + re.escape(name[m.end():]) + "$"
    return re.compile(rx), m.group(0)


def _list_sequence(path: Path) -> list[tuple[int, Path]]:
    if path.is_dir():
        items = []
        for f in path.iterdir():
            if f.suffix.lower() in IMAGE_EXTS and f.is_file():
                m = re.search(r"(\d+)(?=\D*$)", f.stem)
                if m:
                    items.append((int(m.group(1)), f))
        if not items:
            raise DecodeError(f"folder {path} holds no numbered images ({', '.join(IMAGE_EXTS)})")
        nums = [n for n, _ in items]
        if len(set(nums)) != len(nums):
            raise DecodeError(f"folder {path} holds several image sequences (repeated frame "
                              "numbers); pass a pattern such as frame_####.png")
        return sorted(items)
    pat = _pattern_regex(path.name)
    if pat is None:
        raise DecodeError(f"not found: {path}")
    rx, _ = pat
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DecodeError(f"folder not found: {folder}")
    items = []
    for f in folder.iterdir():
        m = rx.match(f.name)
        if m and f.is_file():
            items.append((int(m.group(1)), f))
    if not items:
        raise DecodeError(f"no files match the sequence pattern {path}")
    return sorted(items)


def open_footage(path: str | os.PathLike, frames: tuple[int | None, int | None] | None = None,
                 max_side: int | None = None, colorspace: str = "auto") -> Footage:
    """Open a video file or image sequence; raises :class:`DecodeError` with a clear message.

    ``frames``: inclusive (first, last) source frame numbers, None = to the end.
    ``max_side``: downscale so the longer working side is at most this many pixels.
    ``colorspace``: ``auto`` | ``srgb`` | ``linear`` | ``raw``, how the decoded values become
    the uint8 frames (module docstring); ``raw`` float data takes its range from the first
    selected frame.
    """
    p = Path(path)
    if colorspace not in COLORSPACES:
        raise DecodeError(f"unknown colorspace {colorspace!r}; expected one of "
                          f"{', '.join(COLORSPACES)}")
    if max_side is not None and max_side < 8:
        raise DecodeError(f"max_side must be at least 8 pixels, got {max_side}")
    first, last = (frames or (None, None))
    if first is not None and last is not None and last < first:
        raise DecodeError(f"frame range {first}:{last} is empty (last < first)")
    is_pattern = _pattern_regex(p.name) is not None and not p.exists()
    if p.is_file() and p.suffix.lower() not in IMAGE_EXTS:
        return _open_video(p, first, last, max_side, colorspace)
    if p.is_file():
        raise DecodeError(f"{p} is a single image; pass its folder or a pattern such as "
                          "frame_####.png to read a sequence")
    if not p.exists() and not is_pattern:
        raise DecodeError(f"footage not found: {p}")
    items = _list_sequence(p)
    sel = [(n, f) for n, f in items if (first is None or n >= first) and (last is None or n <= last)]
    if not sel:
        raise DecodeError(f"no frames of {p} in the range {first}:{last} (sequence has "
                          f"{items[0][0]}..{items[-1][0]})")
    img0 = _load_image(sel[0][1])
    size = (img0.shape[1], img0.shape[0])
    return Footage(path=p, kind="sequence", input_size=size, work_size=work_size_for(size, max_side),
                   frame_numbers=[n for n, _ in sel], fps=24.0, files=[f for _, f in sel],
                   colorspace=colorspace,
                   value_range=_raw_range(img0) if colorspace == "raw" else None,
                   source_bytes_per_px=3 * img0.dtype.itemsize)


def _open_video(p: Path, first: int | None, last: int | None, max_side: int | None,
                colorspace: str = "auto") -> Footage:
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise DecodeError(f"cannot open {p}: not a video OpenCV can decode (unsupported "
                              "codec/container or corrupt file)")
        ok, bgr = cap.read()
        if not ok or bgr is None:
            raise DecodeError(f"{p} has no decodable frames (empty, corrupt or unsupported codec)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count <= 0:
            count = 1
            while cap.grab():
                count += 1
    finally:
        cap.release()
    size = (bgr.shape[1], bgr.shape[0])
    f0 = 0 if first is None else max(0, first)
    f1 = count - 1 if last is None else min(last, count - 1)
    if f0 > f1:
        raise DecodeError(f"no frames of {p} in the range {first}:{last} (video has 0..{count - 1})")
    return Footage(path=p, kind="video", input_size=size, work_size=work_size_for(size, max_side),
                   frame_numbers=list(range(f0, f1 + 1)), fps=fps if fps > 0 else 24.0,
                   colorspace=colorspace)


def parse_frame_range(text: str | None) -> tuple[int | None, int | None] | None:
    """Parse ``"A:B"``, ``"A:"``, ``":B"`` or ``"A"`` (inclusive source frame numbers)."""
    if text is None or text == "":
        return None
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            return (int(a) if a.strip() else None, int(b) if b.strip() else None)
        n = int(text)
        return n, n
    except ValueError:
        raise DecodeError(f"bad frame range {text!r}; expected A:B (inclusive frame numbers)") from None
