"""Per-pixel matching kernels authored in torch, exported to ONNX by :mod:`engine.match.export`.

Imported ONLY at export time (and by the parity tests): the runtime executes the committed ONNX
graphs with onnxruntime, so torch is never needed inside Blender. None of these modules has
learned weights; the few constant tensors are fixed filters (binomial blur).

Tensors are NCHW float32 with N = 1. Coordinates are pixels of the tensor's own resolution
(OpenCV convention: x right, y down, centre of the top-left pixel = (0, 0)); flows are
displacements ``(dx, dy)`` in those pixels, channel 0 = x, channel 1 = y.

Kernels:
- :class:`Features`   image (1,1,H,W) in [0,1] -> descriptors (1,C,H,W): a soft, contrast-
  normalised census (signed differences to a ring of 8 neighbours, divided by their RMS), robust
  to exposure gain/offset and to noise.
- :class:`Match`      one coarse-to-fine step: warp the target descriptors by the current flow,
  build a local cost volume over (2r+1)^2 integer shifts against the reference descriptors,
  aggregate it over a 5x5 window, take the winner with a parabolic sub-pixel fit; returns the
  updated flow, the best aggregated cost and a distinctiveness score.
- :class:`Score`      per-pixel L1 descriptor cost of a flow against two references (e.g. the
  query-frame template and the previous-frame appearance), aggregated over 3x3.
- :class:`Warp`       bilinear sampling of a (1,C,H,W) map at absolute pixel positions
  (1,2,h,w) (border clamped), plus an in-bounds mask.

Half precision (``--precision fp16``, :func:`kernels_fp16`): ``Features``, ``Match`` and ``Score``
take ``half=True`` and then hold their bulky per-pixel intermediates (descriptor differences,
the (2r+1)^2-shift cost volume before aggregation, L1 costs) in float16, with float32 inputs
and outputs (casts inside the graph). Coordinates never go to float16: a float16 pixel position
has a step of 0.5 px above 1024 and 1 px above 2048, so warping, flows, the arg-min's sub-pixel
fit and the tie-breaking shift penalty stay float32. ``LKRefine`` (2x2 normal equations whose
determinants underflow float16) and ``Warp`` (pure coordinate arithmetic) have no float16
variant.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import FP16_KERNEL_NAMES

N_FEATURES = 8
MATCH_RADIUS = 3
AGG_WINDOW = 5


def _grid(coords: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Absolute pixel coords (1,2,h',w') -> grid_sample grid (1,h',w',2), align_corners=True."""
    gx = coords[:, 0] * (2.0 / torch.clamp(w - 1.0, min=1.0)) - 1.0
    gy = coords[:, 1] * (2.0 / torch.clamp(h - 1.0, min=1.0)) - 1.0
    return torch.stack([gx, gy], dim=-1)


def _pixel_grid(like: torch.Tensor) -> torch.Tensor:
    """(1,2,H,W) absolute pixel coordinates of every pixel of ``like``."""
    h, w = like.shape[-2], like.shape[-1]
    dev = like.device          # the module's device (torch-cuda), not the CPU
    ys = torch.arange(h, dtype=torch.float32, device=dev).view(1, 1, -1, 1).expand(1, 1, h, w)
    xs = torch.arange(w, dtype=torch.float32, device=dev).view(1, 1, 1, -1).expand(1, 1, h, w)
    return torch.cat([xs, ys], dim=1)


def _size(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shp = torch._shape_as_tensor(t)
    return shp[2].to(torch.float32), shp[3].to(torch.float32)


def _warp(src: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    h, w = _size(src)
    return F.grid_sample(src, _grid(coords, h, w), mode="bilinear", padding_mode="border",
                         align_corners=True)


class Features(nn.Module):
    def __init__(self, half: bool = False):
        super().__init__()
        self.half = half
        # 3x3 binomial pre-blur: tames pixel noise in the signed differences
        b = torch.tensor([1.0, 2.0, 1.0])
        k = (b[:, None] * b[None, :]) / 16.0
        self.register_buffer("blur", k.view(1, 1, 3, 3))
        # Ring of 8 neighbours at distance 2: wide enough to be stable under blur and sub-pixel
        # shifts, small enough to stay local.
        self.offsets = [(-2, -2), (-2, 0), (-2, 2), (0, 2), (2, 2), (2, 0), (2, -2), (0, -2)]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        blur = self.blur
        if self.half:
            img, blur = img.to(torch.float16), blur.to(torch.float16)
        x = F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), blur)
        h, w = x.shape[-2], x.shape[-1]
        p = F.pad(x, (2, 2, 2, 2), mode="replicate")
        diffs = [p[:, :, 2 + dy:2 + dy + h, 2 + dx:2 + dx + w] - x for dy, dx in self.offsets]
        d = torch.cat(diffs, dim=1)
        # Normalise by local contrast; the floor keeps flat, noisy areas from being amplified.
        rms = torch.sqrt(torch.mean(d * d, dim=1, keepdim=True) + 0.02 ** 2)
        out = d / rms
        return out.to(torch.float32) if self.half else out   # (no Cast node in the fp32 graph)


class Match(nn.Module):
    def __init__(self, radius: int = MATCH_RADIUS, window: int = AGG_WINDOW, half: bool = False):
        super().__init__()
        self.half = half
        self.r = radius
        self.k = 2 * radius + 1
        self.window = window

    def forward(self, ref: torch.Tensor, tgt: torch.Tensor, flow: torch.Tensor):
        r, k = self.r, self.k
        warped = _warp(tgt, _pixel_grid(ref) + flow)
        h, w = ref.shape[-2], ref.shape[-1]
        if self.half:   # the (2r+1)^2-plane volume is the bulk of the memory; coords stay fp32
            ref, warped = ref.to(torch.float16), warped.to(torch.float16)
        p = F.pad(warped, (r, r, r, r), mode="replicate")
        costs = []
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                s = p[:, :, r + dy:r + dy + h, r + dx:r + dx + w]
                costs.append(torch.mean(torch.abs(ref - s), dim=1, keepdim=True))
        vol = torch.cat(costs, dim=1)                                    # (1, k*k, H, W)
        pad = self.window // 2
        vol = F.avg_pool2d(vol, self.window, stride=1, padding=pad, count_include_pad=False)
        # float32 from here: the 1e-4 tie-breaking penalty is below float16's step at costs
        # of ~0.5, and the sub-pixel fit divides cost differences.
        if self.half:
            vol = vol.to(torch.float32)
        # A tiny penalty on the shift length: ties (flat, textureless areas) keep the current
        # flow instead of jumping to the first shift in the volume.
        d2 = torch.tensor([float(dx * dx + dy * dy) for dy in range(-r, r + 1)
                           for dx in range(-r, r + 1)], device=vol.device).view(1, k * k, 1, 1)
        vol = vol + 1e-4 * d2
        best, idx = torch.min(vol, dim=1, keepdim=True)
        ix = torch.remainder(idx, k)
        iy = torch.div(idx, k, rounding_mode="floor")

        def at(i):
            return torch.gather(vol, 1, torch.clamp(i, 0, k * k - 1))

        def sub(cm, c0, cp, ok):
            # equiangular (V-shaped) fit: the right model for L1 (SAD-like) costs
            den = torch.maximum(cm, cp) - c0
            off = torch.where(den > 1e-6, 0.5 * (cm - cp) / torch.clamp(den, min=1e-6),
                              torch.zeros_like(den))
            off = torch.clamp(off, -0.5, 0.5)
            return torch.where(ok, off, torch.zeros_like(off))

        ox = sub(at(idx - 1), best, at(idx + 1), (ix > 0) & (ix < k - 1))
        oy = sub(at(idx - k), best, at(idx + k), (iy > 0) & (iy < k - 1))
        d = torch.cat([ix.to(torch.float32) - r + ox, iy.to(torch.float32) - r + oy], dim=1)
        # Distinctiveness: how far the winner stands below the average shift (0 = flat, ambiguous).
        mean = torch.mean(vol, dim=1, keepdim=True)
        distinct = (mean - best) / (mean + 1e-3)
        return flow + d, best, distinct


class Score(nn.Module):
    def __init__(self, half: bool = False):
        super().__init__()
        self.half = half

    def forward(self, ref_a: torch.Tensor, ref_b: torch.Tensor, tgt: torch.Tensor,
                flow: torch.Tensor):
        warped = _warp(tgt, _pixel_grid(ref_a) + flow)
        if self.half:
            ref_a, ref_b = ref_a.to(torch.float16), ref_b.to(torch.float16)
            warped = warped.to(torch.float16)
        ca = torch.mean(torch.abs(ref_a - warped), dim=1, keepdim=True)
        cb = torch.mean(torch.abs(ref_b - warped), dim=1, keepdim=True)
        both = torch.cat([ca, cb], dim=1)
        out = F.avg_pool2d(both, 3, stride=1, padding=1, count_include_pad=False)
        return out.to(torch.float32) if self.half else out


class LKRefine(nn.Module):
    """Sub-pixel polish of a flow by Lucas-Kanade on blurred intensities.

    ``ref`` (1,1,H,W) is the reference patch image in the flow's domain, ``tgt`` (1,1,h,w) the
    target frame; each iteration warps the target by the flow, removes the local (window) mean
    of both (brightness offsets), solves the 2x2 normal equations over the window and keeps the
    step only where it lowers the windowed residual. Steps are clamped to +/-1 px.
    """

    def __init__(self, iters: int = 2, window: int = 7):
        super().__init__()
        self.iters = iters
        self.window = window
        b = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        self.register_buffer("blur", ((b[:, None] * b[None, :]) / 256.0).view(1, 1, 5, 5))
        self.register_buffer("dx", torch.tensor([[[[-0.5, 0.0, 0.5]]]]))
        self.register_buffer("dy", torch.tensor([[[[-0.5], [0.0], [0.5]]]]))

    def _box(self, x):
        p = self.window // 2
        return F.avg_pool2d(x, self.window, stride=1, padding=p, count_include_pad=False)

    def _energy(self, ref0, tgt, coords):
        w = _warp(tgt, coords)
        r = (w - self._box(w)) - ref0
        return self._box(r * r), w

    def forward(self, ref: torch.Tensor, tgt: torch.Tensor, flow: torch.Tensor):
        ref = F.conv2d(F.pad(ref, (2, 2, 2, 2), mode="replicate"), self.blur)
        tgt = F.conv2d(F.pad(tgt, (2, 2, 2, 2), mode="replicate"), self.blur)
        ref0 = ref - self._box(ref)
        base = _pixel_grid(ref)
        for _ in range(self.iters):
            e0, w = self._energy(ref0, tgt, base + flow)
            gx = F.conv2d(F.pad(w, (1, 1, 0, 0), mode="replicate"), self.dx)
            gy = F.conv2d(F.pad(w, (0, 0, 1, 1), mode="replicate"), self.dy)
            r = (w - self._box(w)) - ref0
            axx, axy, ayy = self._box(gx * gx), self._box(gx * gy), self._box(gy * gy)
            bx, by = self._box(gx * r), self._box(gy * r)
            det = axx * ayy - axy * axy
            ok = det > 1e-10
            sdet = torch.where(ok, det, torch.ones_like(det))
            ux = torch.where(ok, -(ayy * bx - axy * by) / sdet, torch.zeros_like(det))
            uy = torch.where(ok, -(axx * by - axy * bx) / sdet, torch.zeros_like(det))
            step = torch.clamp(torch.cat([ux, uy], dim=1), -1.0, 1.0)
            e1, _ = self._energy(ref0, tgt, base + flow + step)
            flow = torch.where(e1 < e0, flow + step, flow)
        return flow


class Warp(nn.Module):
    def forward(self, src: torch.Tensor, coords: torch.Tensor):
        h, w = _size(src)
        inside = ((coords[:, 0:1] >= -0.5) & (coords[:, 0:1] <= w - 0.5)
                  & (coords[:, 1:2] >= -0.5) & (coords[:, 1:2] <= h - 0.5))
        return _warp(src, coords), inside.to(torch.float32)


#: Kernels with a float16 variant (``<name>_fp16.onnx``); the others run float32 at any precision.
FP16_KERNELS = FP16_KERNEL_NAMES


def kernels_fp16() -> dict[str, tuple[nn.Module, tuple, list[str], list[str], dict]]:
    """Like :func:`kernels` for the float16 variants (same inputs, outputs and example
    tensors; float32 at the graph boundary)."""
    table = kernels()
    mods = {"features": Features(half=True), "match": Match(half=True), "score": Score(half=True)}
    return {n: (mods[n],) + table[n][1:] for n in FP16_KERNELS}


def kernels() -> dict[str, tuple[nn.Module, tuple, list[str], list[str], dict]]:
    """name -> (module, example inputs, input names, output names, dynamic axes)."""
    torch.manual_seed(0)
    h, w = 40, 56
    c = N_FEATURES
    img = torch.rand(1, 1, h, w)
    feat = torch.randn(1, c, h, w)
    flow = torch.randn(1, 2, h, w)
    hw = {2: "h", 3: "w"}
    return {
        "features": (Features(), (img,), ["image"], ["features"],
                     {"image": hw, "features": hw}),
        "match": (Match(), (feat, torch.randn(1, c, h, w), flow), ["ref", "tgt", "flow"],
                  ["flow_out", "cost", "distinct"],
                  {"ref": hw, "tgt": {2: "ht", 3: "wt"}, "flow": hw, "flow_out": hw, "cost": hw,
                   "distinct": hw}),
        "score": (Score(), (feat, torch.randn(1, c, h, w), torch.randn(1, c, h, w), flow),
                  ["ref_a", "ref_b", "tgt", "flow"], ["costs"],
                  {"ref_a": hw, "ref_b": hw, "tgt": {2: "ht", 3: "wt"}, "flow": hw, "costs": hw}),
        "lk": (LKRefine(), (img, torch.rand(1, 1, h, w), flow), ["ref", "tgt", "flow"],
               ["flow_out"], {"ref": hw, "tgt": {2: "ht", 3: "wt"}, "flow": hw, "flow_out": hw}),
        "warp": (Warp(), (feat, torch.rand(1, 2, 7, 9) * 40), ["src", "coords"],
                 ["sampled", "inside"],
                 {"src": {1: "c", 2: "hs", 3: "ws"}, "coords": hw, "sampled": {1: "c", 2: "h", 3: "w"},
                  "inside": hw}),
    }
