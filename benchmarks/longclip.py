"""Long clips (issue 4: "1000+ frame clips work"): a synthetic pan with exact 2D ground truth.

The rendered suite is 48 frames; a Cycles clip of 1000+ frames would take hours here. This
check isolates what length stresses -- drift over hundreds of frames, surface leaving and
entering the frame, an occluder passing over the background again and again, memory that must
not grow with the clip -- on footage whose truth is exact by construction:

* the background is a large multi-scale noise texture seen through a window that pans
  (sub-pixel offsets ``ox(t), oy(t)``, bicubic resampling), so a background point at ``(x, y)``
  in frame ``tq`` is at ``(x + ox(tq) - ox(t), y + oy(tq) - oy(t))`` in frame ``t``;
* a textured rectangle (its own texture) sweeps back and forth in front of it, leaving the
  frame and coming back: background points under it are occluded; queries are on the
  background only;
* mild sensor noise.

``python -m benchmarks.longclip --frames 1200 --out bench_out/long`` renders the clip (PNG
frames, cached), runs Worldtrack (``engine track --queries``) and chained DIS on queries spread
over the whole clip, scores TAP-Vid AJ / δ_avg / OA ('first' mode, 256×256 scaling) overall and
for query-to-frame gaps beyond 500 frames, and reports wall time and the child's peak RSS next
to a clip of a quarter the length (memory must not grow with length). Results go to
``<out>/longclip.json`` and a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RENDER_VERSION = 2      # bump when the picture or its truth changes (invalidates cached renders)


@dataclass(frozen=True)
class PanSettings:
    frames: int = 1200
    size: tuple[int, int] = (128, 96)     # (width, height) px
    speed: float = 1.3                    # px/frame of the pan (x)
    wobble: float = 18.0                  # px amplitude of the vertical sway
    noise: float = 1.5                    # grey levels of Gaussian sensor noise
    queries_every: int = 100              # frames between query frames
    seed: int = 0

    def offsets(self) -> np.ndarray:
        """(T, 2) window offsets (px) into the background texture."""
        t = np.arange(self.frames, dtype=np.float64)
        return np.stack([8.0 + self.speed * t, 24.0 + self.wobble * np.sin(t / 37.0)], 1)

    def occluder(self) -> np.ndarray:
        """(T, 4) occluder rectangle per frame: x0, y0, x1, y1 (px, frame coordinates)."""
        w, h = self.size
        t = np.arange(self.frames, dtype=np.float64)
        ow, oh = 0.3 * w, 0.35 * h
        # it sweeps out of the frame and back (about 35 frames out each time): points on it
        # leave for good from a pass's point of view, and come back for later anchors
        cx = 0.5 * w + 0.9 * w * np.sin(t / 23.0)
        cy = 0.45 * h + 0.1 * h * np.cos(t / 31.0)
        return np.stack([cx - ow / 2, cy - oh / 2, cx + ow / 2, cy + oh / 2], 1)


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    import cv2

    tex = np.zeros((h, w, 3), np.float32)
    for s in (2, 4, 8, 16, 32):
        n = rng.random((h // s + 2, w // s + 2, 3)).astype(np.float32)
        tex += cv2.resize(n, (w + 2 * s, h + 2 * s), interpolation=cv2.INTER_CUBIC)[:h, :w] * s ** 0.5
    return (tex - tex.min()) / (tex.max() - tex.min()) * 235 + 10


def render(st: PanSettings, out: Path) -> Path:
    """Write ``out/frames/NNNNN.png`` (cached by settings) and ``out/gt.npz``; returns ``out``."""
    import cv2

    tag = json.dumps({**st.__dict__, "version": RENDER_VERSION}, sort_keys=True)
    if (out / "settings.json").is_file() and (out / "settings.json").read_text() == tag \
            and (out / "gt.npz").is_file():
        return out
    (out / "frames").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(st.seed)
    w, h = st.size
    off = st.offsets()
    bg = _texture(rng, w + int(np.ceil(off[:, 0].max())) + 8, h + int(np.ceil(off[:, 1].max())) + 8)
    fg = _texture(rng, w, h)[::-1].copy()
    occ = st.occluder()
    ys, xs = np.mgrid[0:h, 0:w]
    for t in range(st.frames):
        m = np.float32([[1, 0, off[t, 0]], [0, 1, off[t, 1]]])
        img = cv2.warpAffine(bg, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        x0, y0, x1, y1 = occ[t]
        inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        img[inside] = fg[inside]
        img = img + rng.normal(0.0, st.noise, img.shape)
        cv2.imwrite(str(out / "frames" / f"{t:05d}.png"), np.clip(np.round(img), 0, 255).astype(np.uint8))
    q, tracks, vis = ground_truth(st, rng)
    np.savez(out / "gt.npz", query=q, tracks_2d=tracks, visible=vis)
    (out / "settings.json").write_text(tag)
    return out


def ground_truth(st: PanSettings, rng: np.random.Generator):
    """Queries (N, 3) [t, x, y] on the background at every ``queries_every`` frames, their exact
    tracks (N, T, 2) and visibility (N, T) (inside the frame and not under the occluder)."""
    w, h = st.size
    off, occ = st.offsets(), st.occluder()
    gx, gy = np.meshgrid(np.linspace(4, w - 5, 8), np.linspace(4, h - 5, 6))
    qs = []
    for tq in range(0, st.frames, st.queries_every):
        xy = np.stack([gx.ravel(), gy.ravel()], 1) + rng.uniform(-2, 2, (gx.size, 2))
        x0, y0, x1, y1 = occ[tq]
        free = ~((xy[:, 0] >= x0 - 2) & (xy[:, 0] <= x1 + 2) & (xy[:, 1] >= y0 - 2) & (xy[:, 1] <= y1 + 2))
        qs.append(np.concatenate([np.full((free.sum(), 1), tq), xy[free]], 1))
    q = np.concatenate(qs).astype(np.float32)
    tq = q[:, 0].astype(int)
    tracks = q[:, None, 1:3] + off[tq][:, None, :] - off[None, :, :]
    x, y = tracks[..., 0], tracks[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    under = ((x >= occ[None, :, 0]) & (x <= occ[None, :, 2]) & (y >= occ[None, :, 1])
             & (y <= occ[None, :, 3]))
    return q, tracks.astype(np.float32), inside & ~under


def score(gt: dict, pred_path: Path, size: tuple[int, int], min_gap: int = 0) -> dict[str, float]:
    """TAP-Vid metrics of a result track file against ``gt``; with ``min_gap`` only frames at
    least that many frames after the query are scored."""
    from engine.trackfile import load_trackfile

    from .metrics import tapvid_metrics

    p = load_trackfile(pred_path)
    q = gt["query"]
    T = gt["visible"].shape[1]
    tq = q[:, 0].astype(int)
    mask = (np.arange(T)[None] - tq[:, None]) >= min_gap
    return tapvid_metrics(tq, ~gt["visible"], gt["tracks_2d"], ~np.asarray(p.visible),
                          np.asarray(p.tracks_2d), image_size=size, eval_mask=mask)


def run(st: PanSettings, out: Path, methods: list[str], timeout: float = 3600) -> dict:
    from .metrics import run_measured

    clip = render(st, out / f"pan_{st.frames}")
    gt = dict(np.load(clip / "gt.npz"))
    np.save(clip / "queries.npy", gt["query"])
    res: dict[str, dict] = {}
    for m in methods:
        pred = clip / f"{m}.npz"
        pred.unlink(missing_ok=True)
        if m == "worldtrack":
            cmd = [sys.executable, "-m", "engine", "track", str(clip / "frames"), "--out", str(pred),
                   "--queries", str(clip / "queries.npy"), "--progress", "quiet"]
        else:
            cmd = [sys.executable, "-m", "benchmarks.baselines", m, str(clip), "--queries",
                   str(clip / "queries.npy"), "--out", str(pred)]
        c = run_measured(cmd, point_frames=len(gt["query"]) * st.frames, timeout=timeout,
                         cwd=str(ROOT), log_path=str(clip / f"{m}.log"))
        r: dict = {"wall_s": c.wall_s, "peak_rss_mb": c.peak_rss_mb, "returncode": c.returncode}
        if c.returncode == 0:
            r["all"] = score(gt, pred, st.size)
            r["gap_ge_500"] = score(gt, pred, st.size, min_gap=500) if st.frames > 500 else None
        res[m] = r
    return {"settings": st.__dict__, "n_queries": int(len(gt["query"])), "results": res}


def fmt(v, spec: str = "{:.3f}") -> str:
    """A table cell: ``spec``-formatted number, or "–" when missing / not finite."""
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else spec.format(v)


def table(reports: list[dict]) -> str:
    rows = ["| Frames | Method | AJ | δ_avg | OA | AJ, gap ≥ 500 | δ_avg, gap ≥ 500 | wall s | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        for m, r in rep["results"].items():
            a, g = r.get("all") or {}, r.get("gap_ge_500") or {}
            rows.append(f"| {rep['settings']['frames']} | {m} | {fmt(a.get('average_jaccard'))} | "
                        f"{fmt(a.get('average_pts_within_thresh'))} | {fmt(a.get('occlusion_accuracy'))} | "
                        f"{fmt(g.get('average_jaccard'))} | {fmt(g.get('average_pts_within_thresh'))} | "
                        f"{r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.longclip", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--size", default="128x96", help="WxH")
    ap.add_argument("--methods", default="worldtrack,dis")
    ap.add_argument("--no-short", action="store_true",
                    help="skip the quarter-length clip used to show memory does not grow")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    out = Path(a.out)
    lengths = [a.frames] if a.no_short else [max(50, a.frames // 4), a.frames]
    reports = [run(PanSettings(frames=n, size=(w, h)), out, a.methods.split(",")) for n in lengths]
    (out / "longclip.json").write_text(json.dumps(reports, indent=1))
    print(table(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
