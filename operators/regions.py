"""Regions the artist draws on the clip, as polygons in track-file pixels.

Two sources, both read for the scene's current frame:

- a **Mask** datablock (the Clip Editor's Mask mode): every visible layer's closed, filled
  splines, as Blender evaluates them at that frame (shape-key animation included: the depsgraph's
  evaluated copy holds the interpolated points and recomputed handles). Bezier segments are
  sampled between control points with their handles. Layers combine like Blender's mask
  rasteriser (binary): add / subtract / darken-multiply (intersect) / replace / difference,
  ``invert`` and "fill holes" (even-odd among a layer's splines) honoured; feather is ignored.
  Points *parented* to tracks cannot be followed from Python (their deformed copy,
  ``points_deform``, is not in the RNA; nor is the parent's original position): they are read
  un-parented and reported as a warning.
- the clip's **annotation** strokes (the Annotate tool in the Clip Editor; ``clip.annotation`` on
  4.3+, ``clip.grease_pencil`` on 4.2): each stroke of 3+ points is a closed lasso (even-odd), of
  every visible layer's frame shown at the current frame (the last key at or before it).

Coordinate frames (checked against Blender's source and its compositor's mask rasteriser):

- *Normalised frame* coordinates (as native track markers): (0, 0) the bottom-left corner of the
  frame, (1, 1) the top-right corner. The Clip Editor's view space is this (``View2D.cur`` is
  divided by the frame size in ``movieclip_main_area_set_view2d``), and annotation points are
  stored in it (``annotation_stroke_convertcoords`` maps the mouse through that view, then through
  the inverse of the stabilisation matrix, so strokes stay in unstabilised footage coordinates).
- *Mask* coordinates are normalised with an aspect correction (``BKE_mask_coord_from_frame``):
  for a frame of display size (Wf, Hf), landscape (Wf > Hf): ``mx = u``,
  ``my = (v - 0.5) * Hf / Wf + 0.5``; portrait: ``mx = (u - 0.5) * Wf / Hf + 0.5``, ``my = v``.
  The display size is the clip's pixel size with ``Hf = H * display_aspect.y / display_aspect.x /
  tracking.camera.pixel_aspect`` (``BKE_mask_coord_from_movieclip``).
- Normalised frame -> track-file pixels (OpenCV, pixel centres at integers) is
  :func:`.camera_math.marker_to_pixels` with the track file's image size, so a track file made at
  another resolution than the clip (same framing) still lines up.

No bpy import at module level: the geometry is plain numpy (tested without Blender).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np

from .camera_math import marker_to_pixels
from .selection import points_in_polygons

NO_REGION = "Draw a closed mask or an annotation lasso on the clip first"

#: Blender's mask layer blend modes -> how a (binary) layer combines with the layers before it.
_BLEND = {"MERGE_ADD": "ADD", "ADD": "ADD", "LIGHTEN": "ADD",
          "MERGE_SUBTRACT": "SUBTRACT", "SUBTRACT": "SUBTRACT",
          "DARKEN": "AND", "MUL": "AND", "REPLACE": "REPLACE", "DIFFERENCE": "XOR"}


class RegionError(ValueError):
    """Nothing usable is drawn (the message says what to draw)."""


@dataclass
class RegionLayer:
    """One mask layer (or all annotation strokes): polygons in track-file pixels."""

    polygons: list[np.ndarray]  # each (k, 2), OpenCV pixels of the track file, closed implicitly
    blend: str = "ADD"          # ADD | SUBTRACT | AND | REPLACE | XOR with the layers before it
    invert: bool = False
    holes: bool = True          # overlapping polygons cut holes (even-odd) instead of merging

    def contains(self, xy: np.ndarray) -> np.ndarray:
        inside = points_in_polygons(xy, self.polygons, even_odd=self.holes)
        return ~inside if self.invert else inside


@dataclass
class Region:
    """The drawn region: layers combined in order. ``contains`` takes (n,2) track-file pixels."""

    layers: list[RegionLayer]
    source: str                                   # e.g. "mask 'Mask'" or "annotation"
    warnings: list[str] = field(default_factory=list)

    @property
    def polygons(self) -> list[np.ndarray]:
        return [p for layer in self.layers for p in layer.polygons]

    def contains(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        acc = np.zeros(len(xy), bool)
        for layer in self.layers:
            m = layer.contains(xy)
            if layer.blend == "SUBTRACT":
                acc &= ~m
            elif layer.blend == "AND":
                acc &= m
            elif layer.blend == "REPLACE":
                acc = m
            elif layer.blend == "XOR":
                acc ^= m
            else:
                acc |= m
        return acc


# ----------------------------------------------------------------------------- pure geometry
def _aspect_squeeze(co: np.ndarray, frame_size: tuple[float, float], inverse: bool) -> np.ndarray:
    """Blender's mask space squeezes the shorter frame axis about 0.5 by the aspect ratio."""
    out = np.array(co, np.float64)
    wf, hf = float(frame_size[0]), float(frame_size[1])
    if wf == hf:
        return out
    axis, ratio = (1, hf / wf) if wf > hf else (0, wf / hf)
    if inverse:
        ratio = 1.0 / ratio
    out[..., axis] = (out[..., axis] - 0.5) * ratio + 0.5
    return out


def mask_to_frame(co: np.ndarray, frame_size: tuple[float, float]) -> np.ndarray:
    """Mask coordinates (...,2) -> normalised frame coordinates (inverse of Blender's
    ``BKE_mask_coord_from_frame`` for a frame of display size ``frame_size`` = (Wf, Hf))."""
    return _aspect_squeeze(co, frame_size, inverse=True)


def frame_to_mask(uv: np.ndarray, frame_size: tuple[float, float]) -> np.ndarray:
    """Normalised frame coordinates -> mask coordinates (``BKE_mask_coord_from_frame``)."""
    return _aspect_squeeze(uv, frame_size, inverse=False)


def bezier_loop(co: np.ndarray, handle_left: np.ndarray, handle_right: np.ndarray,
                max_step: float = 2.0, max_samples: int = 64) -> np.ndarray:
    """Closed cubic Bezier spline -> polygon ((m,2), same units as the input).

    Segment i runs from ``co[i]`` (control ``handle_right[i]``) to ``co[i+1]`` (control
    ``handle_left[i+1]``), the last one back to ``co[0]`` (Blender's cyclic mask splines). Each
    segment gets enough samples that its control polygon is cut into pieces of at most
    ``max_step`` units (2 px when given pixels), between 1 and ``max_samples``.
    """
    p0 = np.asarray(co, np.float64).reshape(-1, 2)
    p1 = np.asarray(handle_right, np.float64).reshape(-1, 2)
    p3 = np.roll(p0, -1, axis=0)
    p2 = np.roll(np.asarray(handle_left, np.float64).reshape(-1, 2), -1, axis=0)
    out = []
    for a, b, c, d in zip(p0, p1, p2, p3):
        length = np.linalg.norm(b - a) + np.linalg.norm(c - b) + np.linalg.norm(d - c)
        n = int(np.clip(np.ceil(length / max_step), 1, max_samples))
        s = np.arange(n, dtype=np.float64)[:, None] / n  # the segment's end is the next one's start
        r = 1.0 - s
        out.append(r ** 3 * a + 3 * r * r * s * b + 3 * r * s * s * c + s ** 3 * d)
    return np.concatenate(out) if out else np.zeros((0, 2))


# ------------------------------------------------------------------------------ Blender data
def clip_frame_size(clip, fallback: tuple[int, int] | None = None) -> tuple[float, float]:
    """The clip's display frame size for mask coordinates (``BKE_mask_coord_from_movieclip``):
    its pixel size, the height scaled by the display aspect and the tracking camera's pixel
    aspect. ``fallback`` (e.g. the track file's size) stands in when the clip's footage cannot be
    read (size 0)."""
    w, h = (float(v) for v in clip.size)
    if (w <= 0 or h <= 0) and fallback is not None:
        w, h = float(fallback[0]), float(fallback[1])
    if w <= 0 or h <= 0:
        raise RegionError(f"clip '{clip.name}' has no readable frames (its size is unknown)")
    ax, ay = (float(v) for v in clip.display_aspect)
    pa = float(clip.tracking.camera.pixel_aspect) or 1.0
    return w, h * (ay / (ax or 1.0)) / pa


def _spline_arrays(spline) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pts = spline.points
    co = np.array([p.co[:] for p in pts], np.float64)
    hl = np.array([p.handle_left[:] for p in pts], np.float64)
    hr = np.array([p.handle_right[:] for p in pts], np.float64)
    return co, hl, hr


def mask_region(mask, clip, track_size: tuple[int, int], depsgraph=None) -> Region:
    """The region of ``mask`` (evaluated by ``depsgraph`` when given, i.e. at its frame) as
    track-file pixels of size ``track_size`` = (W, H). Raises :class:`RegionError` when it has no
    visible closed, filled spline."""
    m = mask.evaluated_get(depsgraph) if depsgraph is not None else mask
    W, H = int(track_size[0]), int(track_size[1])
    fs = clip_frame_size(clip, (W, H))
    layers: list[RegionLayer] = []
    n_open = n_parented = 0
    for layer in m.layers:
        if layer.hide or layer.alpha <= 0.0:
            continue
        polys = []
        for spline in layer.splines:
            if not (spline.use_cyclic and spline.use_fill) or len(spline.points) < 2:
                n_open += 1
                continue
            n_parented += sum(1 for p in spline.points if p.parent.id is not None and p.parent.sub_parent)
            co, hl, hr = (marker_to_pixels(mask_to_frame(a, fs), W, H) for a in _spline_arrays(spline))
            poly = bezier_loop(co, hl, hr)
            if len(poly) >= 3:
                polys.append(poly)
        if polys:
            layers.append(RegionLayer(polys, _BLEND.get(layer.blend, "ADD"), bool(layer.invert),
                                      bool(layer.use_fill_holes)))
    if not layers:
        why = f" ({n_open} open or unfilled spline(s) in mask '{mask.name}')" if n_open else \
            f" (mask '{mask.name}' has no visible closed spline)"
        raise RegionError(NO_REGION + why)
    warnings = []
    if n_parented:
        warnings.append(f"{n_parented} point(s) of mask '{mask.name}' are parented to tracks; "
                        "Worldtrack reads them at their un-parented position (key the mask's shape instead)")
    return Region(layers, f"mask '{mask.name}'", warnings)


def clip_annotation(clip):
    """The clip's annotation datablock (``annotation`` on 4.3+, ``grease_pencil`` on 4.2) or None."""
    for attr in ("annotation", "grease_pencil"):
        if hasattr(clip, attr):
            return getattr(clip, attr)
    return None


def _frame_at(layer, frame: int):
    """The layer's frame shown at scene ``frame``: the last key at or before it (None if none)."""
    best = None
    for f in layer.frames:
        if f.frame_number <= frame and (best is None or f.frame_number > best.frame_number):
            best = f
    return best


def annotation_region(clip, frame: int, track_size: tuple[int, int]) -> Region:
    """The clip's annotation strokes shown at scene ``frame`` as closed lassos (track-file pixels
    of size ``track_size``). Raises :class:`RegionError` when there is none with 3+ points."""
    gpd = clip_annotation(clip)
    W, H = int(track_size[0]), int(track_size[1])
    polys = []
    for layer in (gpd.layers if gpd is not None else ()):
        if getattr(layer, "annotation_hide", False):
            continue
        f = _frame_at(layer, frame)
        if f is None:
            continue
        for stroke in f.strokes:
            # 4.2 tells canvas strokes from screen-space ones; 4.3+ annotations have no such flag.
            if getattr(stroke, "display_mode", "2DSPACE") not in ("2DSPACE", "2DIMAGE"):
                continue
            co = np.array([p.co[:2] for p in stroke.points], np.float64)
            co = co[np.isfinite(co).all(1)] if len(co) else co
            if len(co) >= 3:
                polys.append(marker_to_pixels(co, W, H))
    if not polys:
        raise RegionError(f"{NO_REGION} (no annotation stroke of 3+ points on clip '{clip.name}' "
                          f"at frame {frame})")
    return Region([RegionLayer(polys, holes=False)], "annotation")


def find_mask(context, clip, chosen=None):
    """The mask to use: ``chosen`` (Scene > Worldtrack > Mask), else the Clip Editor's active mask
    (the context's editor, or any Clip Editor of the screen showing ``clip``); None if none."""
    if chosen is not None:
        return chosen
    sp = getattr(context, "space_data", None)
    if sp is not None and sp.type == "CLIP_EDITOR" and sp.mask is not None:
        return sp.mask
    screen = getattr(context, "screen", None)
    for area in (screen.areas if screen is not None else ()):
        if area.type != "CLIP_EDITOR":
            continue
        s = area.spaces.active
        if s is not None and s.clip == clip and s.mask is not None:
            return s.mask
    return None


def read_region(context, clip, track_size: tuple[int, int], source: str = "AUTO",
                chosen_mask=None) -> Region:
    """The region drawn on ``clip`` at the scene's current frame.

    ``source``: ``MASK`` (the chosen or active mask), ``ANNOTATION`` (the clip's annotation
    lassos) or ``AUTO`` (the mask if there is one with a closed spline, else the annotation).
    Raises :class:`RegionError` with what to draw when nothing usable is there.
    """
    scene = context.scene
    mask = find_mask(context, clip, chosen_mask) if source in ("AUTO", "MASK") else None
    mask_err = None
    if mask is not None:
        depsgraph = context.evaluated_depsgraph_get()  # evaluated at the current frame
        try:
            return mask_region(mask, clip, track_size, depsgraph)
        except RegionError as e:
            if source == "MASK":
                raise
            mask_err = e
    elif source == "MASK":
        raise RegionError(f"{NO_REGION}: no mask chosen (pick one under Tracks > Mask, or open one "
                          "in the Movie Clip Editor's Mask mode)")
    try:
        return annotation_region(clip, scene.frame_current, track_size)
    except RegionError:
        if source == "ANNOTATION":
            raise
        why = str(mask_err).removeprefix(NO_REGION).strip() if mask_err else ""
        raise RegionError(f"{NO_REGION} (Mask mode, or the Annotate tool in the Movie Clip Editor)"
                          + (f"; {why.strip('()')}" if why else "")) from None

