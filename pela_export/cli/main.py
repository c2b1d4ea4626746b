"""``pela-export`` command line: one subcommand per pipeline stage, plus ``run``.

Every :class:`PelaExportError` becomes one clear message and exit code 2; a
traceback appears only with ``--debug``.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence

from ..errors import PelaExportError
from . import args as A

EXAMPLES = {
    "run": """
        pela-export run                                   # embedded digits ViT: train once, compress, export, verify, bench
        pela-export run timm:deit_small_patch16_224 --ratio 3 --skip bench
        pela-export run timm:vit_base_patch16_224 --checkpoint vit.pth --align 8 --out out/vit
        pela-export run default:fashion-mnist --data fashion-mnist
        pela-export run --skip compress --skip export    # re-verify/re-bench from saved artifacts
        pela-export run --precision fp16,int8 --calib-method percentile --int8-keep-worst 2
    """,
    "compress": """
        pela-export compress                              # factorize the embedded default at k=2
        pela-export compress timm:swin_tiny_patch4_window7_224 --ratio 3 --exclude '*downsample*'
        pela-export compress mypkg.models:build --checkpoint w.pt --input-shape 3,64,64
        pela-export compress --ratio 4 --train --epochs 10          # PELA training: distil from the frozen original
        pela-export compress --ratio 3 --method whiten --calib-samples 512
    """,
    "export": """
        pela-export export                                # ONNX of original + compressed, simplified and verified
        pela-export export timm:deit_small_patch16_224 --opset 17 --simplifier onnxslim
        pela-export export model.pt2 --legacy-exporter --static-shapes
    """,
    "bench": """
        pela-export bench                                 # params, FLOPs, size, latency, accuracy side by side
        pela-export bench timm:deit_small_patch16_224 --batch-sizes 1,8 --runs 50 --threads 2
        pela-export bench default:fashion-mnist --data fashion-mnist --eval-samples 0
    """,
    "build": """
        pela-export build --out pela-out/digits-vit       # engines for every ONNX variant (needs TensorRT: on the device)
        pela-export build --out out/deit --workspace 2048 --timing-cache deit.cache --opt-level 3
        pela-export build --out out/deit --dla-core 0    # Jetson Orin DLA with GPU fallback
    """,
    "inspect": """
        pela-export inspect timm:deit_small_patch16_224 --ratio 3   # ranks and parameters a compression would give
        pela-export inspect pela-out/digits-vit/compressed.onnx      # parameters, ops, factor pairs of an ONNX file
    """,
}


def _sub(subs: argparse._SubParsersAction, name: str, help_: str, groups: Sequence[Callable[[argparse.ArgumentParser], None]]) -> None:
    p = subs.add_parser(name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n" + textwrap.dedent(EXAMPLES[name]).rstrip())
    for add in groups:
        add(p)
    p.set_defaults(command=name)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="pela-export",
        description="Compress a model with low-rank (PELA) factorization, export verified ONNX, and benchmark "
                    "original vs compressed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + textwrap.dedent(EXAMPLES["run"]).rstrip(),
    )
    parser.add_argument("--version", action="version", version=f"pela-export {__version__}")
    subs = parser.add_subparsers(title="commands", metavar="COMMAND")
    common = (A.add_model_args, A.add_output_args)
    _sub(subs, "run", "all stages in order: compress, export, simplify, verify, precision, build, bench, report",
         (*common, A.add_compress_args, A.add_calib_args, A.add_train_args, A.add_export_args,
          A.add_precision_args, A.add_trt_args, A.add_bench_args, A.add_skip_args))
    _sub(subs, "compress", "factorize eligible linears (optionally PELA-train them) and save the model + rank table",
         (*common, A.add_compress_args, A.add_calib_args, A.add_train_args))
    _sub(subs, "export", "trace original and compressed to ONNX, simplify, and verify against PyTorch",
         (*common, A.add_compress_args, A.add_export_args))
    _sub(subs, "bench", "benchmark original vs compressed (params, FLOPs, size, latency, accuracy) and write the report",
         (*common, A.add_compress_args, A.add_export_args, A.add_bench_args))
    _sub(subs, "build", "TensorRT engines for every ONNX variant in --out (parser check + trtexec scripts always)",
         (*common, A.add_compress_args, A.add_precision_args, A.add_trt_args))
    p = subs.add_parser("inspect", help="parameter/rank summary of a model or an ONNX file",
                        description="parameter/rank summary of a model or an ONNX file",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n" + textwrap.dedent(EXAMPLES["inspect"]).rstrip())
    A.add_model_args(p)
    A.add_compress_args(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.set_defaults(command="inspect")
    return parser


def _dispatch(ns: argparse.Namespace) -> int:
    from .. import api

    if ns.command == "inspect":
        print(api.inspect(ns.model, checkpoint=ns.checkpoint, input_shape=ns.input_shape, ratio=ns.ratio,
                          method=ns.method, rank_policy=ns.rank_policy, align=ns.align, include=ns.include,
                          exclude=ns.exclude))
        return 0
    cfg = A.config_from_args(ns)
    stage = {"run": api.run, "compress": api.compress, "export": api.export, "bench": api.bench,
             "build": api.build}[ns.command]
    stage(cfg)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "command", None):
        parser.print_help()
        return 2
    try:
        return _dispatch(ns)
    except PelaExportError as exc:
        if getattr(ns, "debug", False):
            raise
        print(f"pela-export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pela-export: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
