"""numpy glue around the ONNX matching kernels (run by onnxruntime; torch not needed).

Arrays are channel-first float32 at one pyramid level's resolution: descriptors (C, h, w),
flows / positions (2, h, w) with channel 0 = x, 1 = y, in that level's pixels (OpenCV
convention). Level 0 is the working resolution; level l is downscaled by cv2.pyrDown l times.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runtime import TORCH_DEVICES, get_session

ONNX_DIR = Path(__file__).resolve().parent / "onnx"
MIN_LEVEL_SIDE = 20
#: The kernel graphs :class:`Kernels` runs (``ONNX_DIR / f"{name}.onnx"``).
KERNEL_NAMES = ("features", "match", "score", "warp", "lk")


def n_levels(h: int, w: int, max_levels: int = 5) -> int:
    """Pyramid depth such that the coarsest level's shorter side is >= MIN_LEVEL_SIDE."""
    n = 1
    while n < max_levels and min(h, w) / 2 ** n >= MIN_LEVEL_SIDE:
        n += 1
    return n


def resize_flow(flow: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resample a (2, h0, w0) displacement field to (2, h, w), rescaling its values."""
    import cv2

    h0, w0 = flow.shape[1:]
    if (h0, w0) == (h, w):
        return flow
    interp = cv2.INTER_LINEAR if h > h0 else cv2.INTER_AREA
    out = np.empty((2, h, w), np.float32)
    out[0] = cv2.resize(flow[0], (w, h), interpolation=interp) * (w / w0)
    out[1] = cv2.resize(flow[1], (w, h), interpolation=interp) * (h / h0)
    return out


def median_flow(flow: np.ndarray, k: int = 5) -> np.ndarray:
    """Edge-preserving 5x5 median of each flow channel (removes isolated mismatches)."""
    import cv2

    return np.stack([cv2.medianBlur(np.ascontiguousarray(c), k) for c in flow])


class Kernels:
    """The ONNX kernels on one execution device. Sessions are cached process-wide.

    ``arena``: use ONNX Runtime's CPU memory arena (default; fastest, but each session keeps
    its peak allocation for the life of the process). ``False`` returns memory after every run
    (what a memory limit wants: :func:`engine.track.memory.make_kernels`); results are the same.
    """

    def __init__(self, device: str = "auto", threads: int | None = None, arena: bool = True):
        self.device = device
        self.arena = bool(arena)
        if device in TORCH_DEVICES:
            from .kernels_torch import kernels

            table = kernels()
            self._s = {n: _TorchSession(table[n][0], table[n][2], device.removeprefix("torch-"),
                                        threads) for n in KERNEL_NAMES}
        else:
            self._s = {n: get_session(ONNX_DIR / f"{n}.onnx", device, threads, arena=self.arena)
                       for n in KERNEL_NAMES}

    def features(self, gray: np.ndarray) -> np.ndarray:
        """Descriptors (C, h, w) of a grey image (h, w) with values in [0, 1]."""
        out = self._s["features"].run(None, {"image": gray[None, None].astype(np.float32)})[0]
        return out[0]

    def pyramid(self, gray: np.ndarray, levels: int) -> list[np.ndarray]:
        """Descriptor pyramid [level 0, 1, ...] of a grey (h, w) image in [0, 1]."""
        import cv2

        imgs = [gray.astype(np.float32)]
        for _ in range(1, levels):
            imgs.append(cv2.pyrDown(imgs[-1]))
        return [self.features(im) for im in imgs]

    def match(self, ref: np.ndarray, tgt: np.ndarray, flow: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One local-search step: (flow, best aggregated cost, distinctiveness), each (.., h, w)."""
        f, c, d = self._s["match"].run(None, {"ref": ref[None], "tgt": tgt[None],
                                              "flow": flow[None].astype(np.float32)})
        return f[0], c[0, 0], d[0, 0]

    def score(self, ref_a: np.ndarray, ref_b: np.ndarray, tgt: np.ndarray, flow: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """3x3-aggregated L1 descriptor costs (h, w) of ``flow`` against two references."""
        c = self._s["score"].run(None, {"ref_a": ref_a[None], "ref_b": ref_b[None],
                                        "tgt": tgt[None], "flow": flow[None].astype(np.float32)})[0]
        return c[0, 0], c[0, 1]

    def lk(self, ref: np.ndarray, tgt: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Lucas-Kanade sub-pixel polish of ``flow`` (2, h, w): reference intensities ``ref``
        (h, w) in the flow's domain against the target grey frame ``tgt`` (h', w')."""
        out = self._s["lk"].run(None, {"ref": ref[None, None].astype(np.float32),
                                       "tgt": tgt[None, None].astype(np.float32),
                                       "flow": flow[None].astype(np.float32)})[0]
        return out[0]

    def warp(self, src: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear samples (C, h', w') of ``src`` (C, h, w) at pixel ``coords`` (2, h', w'),
        border-clamped, and the in-bounds mask (h', w') as bool."""
        s, m = self._s["warp"].run(None, {"src": src[None].astype(np.float32),
                                          "coords": coords[None].astype(np.float32)})
        return s[0], m[0, 0] > 0.5

    def flow(self, ref_pyr: list[np.ndarray], tgt_pyr: list[np.ndarray],
             init: np.ndarray | None = None, first_level: int | None = None,
             last_level: int = 0, final_iters: int = 1
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coarse-to-fine dense flow ref -> tgt (2, h, w) at level ``last_level``.

        Starts at ``first_level`` (default: coarsest) from ``init`` (a level-0 flow, or zero)
        and returns (flow, cost, distinctiveness) at ``last_level``. ``final_iters`` > 1
        repeats the last level (re-warping at the sub-pixel estimate refines it further).
        """
        top = len(ref_pyr) - 1 if first_level is None else first_level
        h, w = ref_pyr[top].shape[1:]
        flow = (np.zeros((2, h, w), np.float32) if init is None
                else resize_flow(init, h, w))
        cost = dist = None
        levels = list(range(top, last_level - 1, -1)) + [last_level] * (final_iters - 1)
        for lvl in levels:
            h, w = ref_pyr[lvl].shape[1:]
            flow = resize_flow(flow, h, w)
            flow, cost, dist = self.match(ref_pyr[lvl], tgt_pyr[lvl], flow)
            flow = median_flow(flow)
        return flow, cost, dist


def sample_points(planes: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``planes`` (C, h, w) at pixel positions ``xy`` (M, 2) -> (M, C),
    border-replicated. (cv2.remap limits maps to < 32767 per side, so points are laid out in
    rows of 1024.)"""
    import cv2

    m = len(xy)
    width = 1024
    rows = max(1, -(-m // width))
    mx = np.zeros(rows * width, np.float32)
    my = np.zeros(rows * width, np.float32)
    mx[:m], my[:m] = xy[:, 0], xy[:, 1]
    mx, my = mx.reshape(rows, width), my.reshape(rows, width)
    out = np.empty((m, planes.shape[0]), np.float32)
    for c in range(planes.shape[0]):
        out[:, c] = cv2.remap(np.ascontiguousarray(planes[c], np.float32), mx, my,
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1)[:m]
    return out


class _TorchSession:
    """One kernel's torch source module behind onnxruntime's ``run(None, feeds)`` interface:
    the measurement backend of ``--device torch-cuda`` / ``torch-cpu`` (same inputs, outputs
    and maths as the exported graph; the parity tests hold them together)."""

    def __init__(self, module, inputs: list[str], device: str, threads: int | None = None):
        import torch

        if threads and device == "cpu":
            torch.set_num_threads(int(threads))
        self.inputs = inputs
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def run(self, _output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n], np.float32)).to(self.device)
                    for n in self.inputs]
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in out]
