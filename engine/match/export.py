"""Regenerate the committed ONNX graphs: ``python -m engine.match.export [--out DIR]``.

Needs torch (a development dependency only). Writes ``<name>.onnx`` for every kernel in
:func:`engine.match.kernels_torch.kernels` and ``<name>_fp16.onnx`` for the float16 variants in
:func:`engine.match.kernels_torch.kernels_fp16` (``--precision fp16``) into
``engine/match/onnx/`` by default.
"""
from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path

ONNX_DIR = Path(__file__).resolve().parent / "onnx"
OPSET = 17


def export_all(out_dir: str | Path = ONNX_DIR) -> list[Path]:
    """Export every kernel to ``out_dir``; returns the written paths."""
    import onnx
    import torch

    from . import kernels_torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    table = dict(kernels_torch.kernels())
    table.update({f"{n}_fp16": k for n, k in kernels_torch.kernels_fp16().items()})
    for name, (mod, args, inames, onames, dyn) in table.items():
        mod.eval()
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, args, buf, input_names=inames, output_names=onames,
                              dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True,
                              dynamo=False)
        model = onnx.load_from_string(buf.getvalue())
        onnx.checker.check_model(model)
        model.producer_name = "worldtrack.engine.match.export"
        model.doc_string = f"Worldtrack kernel '{name}' (no learned weights); see kernels_torch.py"
        path = out / f"{name}.onnx"
        onnx.save(model, str(path))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.match.export", description=__doc__)
    ap.add_argument("--out", default=str(ONNX_DIR), help="output folder (default: %(default)s)")
    a = ap.parse_args(argv)
    for p in export_all(a.out):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
