"""``pela-export`` command line: one subcommand per pipeline stage, plus ``run``.

Every :class:`PelaExportError` becomes one clear message and exit code 2; a
traceback appears only with ``--debug``. The on-device commands (``verify``,
``device-bench``) build a parser and run without importing torch.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence

from ..errors import PelaExportError
from . import device_args as D

DEVICE_COMMANDS = ("verify", "device-bench", "device-latency", "report")

EXAMPLES = {
    "run": """
        pela-export run                                   # embedded digits ViT: train once, compress, export, verify, bench
        pela-export run timm:deit_small_patch16_224 --ratio 3 --skip bench
        pela-export run timm:vit_base_patch16_224 --checkpoint vit.pth --align 8 --out out/vit
        pela-export run default:fashion-mnist --data fashion-mnist
        pela-export run --skip compress --skip export    # re-verify/re-bench from saved artifacts
        pela-export run --precision fp16,int8 --calib-method percentile --int8-keep-worst 2
        pela-export run timm:deit_small_patch16_224 --structure mpo --structure-opt bond_dim=16 --share-central
        pela-export run default:fashion-mnist --structure kronecker --lowering structured --lowering-override '*fc2=dense'
    """,
    "compress": """
        pela-export compress                              # factorize the embedded default at k=2
        pela-export compress timm:swin_tiny_patch4_window7_224 --ratio 3 --exclude '*downsample*'
        pela-export compress mypkg.models:build --checkpoint w.pt --input-shape 3,64,64
        pela-export compress --ratio 4 --train --epochs 10          # PELA training: distil from the frozen original
        pela-export compress --ratio 3 --method whiten --calib-samples 512
        pela-export compress default:fashion-mnist --structure snell --structure-opt density=0.1 --train --epochs 1
        pela-export compress --structure circulant --structure-base dense   # adapter on the dense weights (default: SVD base at --ratio)
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
    "sweep": """
        pela-export sweep                                 # embedded digits ViT: k = 2,3,4 at fp32, front + recommendation
        pela-export sweep timm:deit_small_patch16_224 --ratios 2,3 --threads 2 --budget-minutes 30
        pela-export sweep --ratios 2,4 --policies ratio,sensitivity --precisions fp32,int8
        pela-export sweep --train-top 1 --epochs 2        # + PELA-train the fastest front point that loses accuracy
        pela-export sweep --out pela-out/digits-vit-sweep         # again: measured points are reused (resume)
      writes OUT/points/<point>/ (a run directory + point.json per point), sweep.json, sweep.md, sweep.png
    """,
    "build": """
        pela-export build --out pela-out/digits-vit       # engines for every ONNX variant (needs TensorRT: on the device)
        pela-export build --out out/deit --workspace 2048 --timing-cache deit.cache --opt-level 3
        pela-export build --out out/deit --dla-core 0    # Jetson Orin DLA with GPU fallback
    """,
    "package": """
        pela-export package --out pela-out/digits-vit     # bundle + bundle.tar.gz from a run's artifacts
        pela-export package timm:deit_small_patch16_224 --out out/deit --trt-version 10.3
    """,
    "verify": """
        pela-export verify bundle.tar.gz                  # on the device: hashes, schema, missing/extra files
        pela-export verify pela-out/digits-vit/bundle
    """,
    "device-bench": """
        pela-export device-bench bundle.tar.gz            # TensorRT engines (cached), golden check, latency
        pela-export device-bench bundle.tar.gz --backend onnxruntime --batch-sizes 1,8 --runs 200
        pela-export device-bench bundle --out results/orin-maxn
      exit status: 0 all variants match their golden outputs, 1 some do not (report still written), 2 error
    """,
    "device-latency": """
        pela-export device-latency bundle.tar.gz          # the bundle's layer shapes, TensorRT fp16 engines
        pela-export device-latency bundle.tar.gz --backend onnxruntime --threads 4 --out results/orin-cpu
      then, on the workstation: pela-export run MODEL --rank-policy latency --latency-budget 0.7 \\
                                    --latency-table latency_table.json
    """,
    "report": """
        pela-export report pela-out/digits-vit orin/device-report.json thor/device-report.json
        pela-export report pela-out/deit pela-device/deit_small_patch16_224 --out results/deit-compare
    """,
    "inspect": """
        pela-export inspect timm:deit_small_patch16_224 --ratio 3   # ranks and parameters a compression would give
        pela-export inspect pela-out/digits-vit/compressed.onnx      # parameters, ops, factor pairs of an ONNX file
        pela-export inspect out/mpo/                                  # a saved structured model (structured.json inside)
        pela-export inspect --out pela-out/deit_small_patch16_224     # the same for a `run --structure ...` output dir
        pela-export inspect default:fashion-mnist --structure-spec out/mpo/structured.json --remeasure
      a structured model is recognised from --structure-spec, a directory or .json holding structured.json, or a
      --checkpoint whose sibling structured.json names it; it lists each layer's type, parameters and lowering choice
    """,
}


def _sub(subs: argparse._SubParsersAction, name: str, help_: str, groups: Sequence[Callable[[argparse.ArgumentParser], None]]) -> None:
    p = subs.add_parser(name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n" + textwrap.dedent(EXAMPLES[name]).rstrip())
    for add in groups:
        add(p)
    p.set_defaults(command=name)


def _device_sub(subs: argparse._SubParsersAction, name: str, help_: str,
                add: Callable[[argparse.ArgumentParser], None]) -> None:
    p = subs.add_parser(name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n" + textwrap.dedent(EXAMPLES[name]).rstrip())
    add(p)
    p.set_defaults(command=name)


def _workstation_commands(subs: argparse._SubParsersAction) -> None:
    from . import args as A

    common = (A.add_model_args, A.add_output_args)
    _sub(subs, "run", "all stages in order: compress, export, simplify, verify, precision, build, bench, report, package",
         (*common, A.add_compress_args, A.add_calib_args, A.add_train_args, A.add_export_args,
          A.add_precision_args, A.add_trt_args, A.add_bench_args, A.add_skip_args))
    _sub(subs, "compress", "factorize eligible Linear and Conv2d layers (optionally PELA-train them) and save the model + rank table",
         (*common, A.add_compress_args, A.add_calib_args, A.add_train_args))
    _sub(subs, "export", "trace original and compressed to ONNX, simplify, and verify against PyTorch",
         (*common, A.add_compress_args, A.add_export_args))
    _sub(subs, "bench", "benchmark original vs compressed (params, FLOPs, size, latency, accuracy) and write the report",
         (*common, A.add_compress_args, A.add_export_args, A.add_bench_args))
    from ..sweep.options import add_sweep_args

    _sub(subs, "sweep", "measure a grid of ratios/rank policies x methods x precisions (latency on ONNX Runtime CPU, "
                        "score against the original), the Pareto front, its chart and a recommendation",
         (*common, A.add_export_args, add_sweep_args))
    _sub(subs, "build", "TensorRT engines for every ONNX variant in --out (parser check + trtexec scripts always)",
         (*common, A.add_compress_args, A.add_precision_args, A.add_trt_args))
    p = subs.add_parser("inspect", help="parameter/rank summary of a model or an ONNX file",
                        description="parameter/rank summary of a model or an ONNX file",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n" + textwrap.dedent(EXAMPLES["inspect"]).rstrip())
    A.add_model_args(p)
    A.add_compress_args(p, structure=False)
    g = p.add_argument_group("structured models (MPO, structured adapters, SNELL)")
    g.add_argument("--out", metavar="DIR", help="output directory of a `run`/`compress --structure` run: inspect the "
                                                "structured model saved there (same as passing DIR as MODEL)")
    g.add_argument("--structure-spec", metavar="FILE",
                   help="structured.json of a saved structured model (weights: --checkpoint, else the file it names); "
                        "found automatically next to --checkpoint or inside a directory given as MODEL")
    g.add_argument("--tokens", type=int, help="tokens per sample the structured layers see, for measuring their "
                                              "lowering (default: from the model's config)")
    g.add_argument("--remeasure", action="store_true",
                   help="measure the lowering now even when the spec records a plan")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.set_defaults(command="inspect")
    _sub(subs, "package", "deployment bundle (ONNX variants, golden outputs, deploy.json, SHA256SUMS) and its .tar.gz "
                          "from the artifacts of a run in --out", (*common, A.add_package_args, A.add_trt_args))


def build_parser(device_only: bool = False) -> argparse.ArgumentParser:
    """The full parser, or (``device_only``) just the torch-free device commands."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="pela-export",
        description="Compress a model with low-rank (PELA) factorization, export verified ONNX, and benchmark "
                    "original vs compressed." + (" (device commands only: PyTorch is not needed for these)"
                                                 if device_only else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + textwrap.dedent(EXAMPLES["run"]).rstrip(),
    )
    parser.add_argument("--version", action="version", version=f"pela-export {__version__}")
    subs = parser.add_subparsers(title="commands", metavar="COMMAND")
    if not device_only:
        _workstation_commands(subs)
    _device_sub(subs, "verify", "check a deployment bundle on the device: SHA256SUMS hashes, deploy.json schema, "
                                "missing and extra files (each problem named file by file)", D.add_verify_args)
    _device_sub(subs, "device-bench", "on the device: build (or reuse) TensorRT engines, check every variant against "
                                      "the bundle's golden outputs and time it; writes device-report.json + .md",
                D.add_device_bench_args)
    _device_sub(subs, "device-latency", "on the device: time the per-layer latency table of a bundle built with "
                                        "--rank-policy latency (dense and factorized layers, the whole original "
                                        "model); writes latency_table.json for --latency-table",
                D.add_device_latency_args)
    _device_sub(subs, "report", "merge a workstation run's report with device reports into one comparison "
                                "(comparison.json + .md + charts)", D.add_report_args)
    return parser


def _verify(ns: argparse.Namespace) -> int:
    from ..runtime.bundle import verify_path

    result = verify_path(ns.bundle)
    if result.problems:
        print(f"pela-export: error: {ns.bundle} failed verification ({len(result.problems)} problem(s)):", file=sys.stderr)
        for p in result.problems:
            print(f"  - {p}", file=sys.stderr)
        print("  fix: copy the bundle again from the workstation (compare bundle.tar.gz's size and sha256); if the "
              "files there are fine, re-create it with `pela-export package --out RUN_DIR`", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def _device_bench(ns: argparse.Namespace) -> int:
    import json

    from .. import api

    json_path, md_path = api.device_bench(ns.bundle, ns.out, batch_sizes=ns.batch_sizes, runs=ns.runs,
                                          warmup=ns.warmup, backend=ns.backend, threads=ns.threads,
                                          engine_cache=ns.engine_cache, sequence_length=ns.sequence_length)
    report = json.loads(json_path.read_text(encoding="utf-8"))
    dev = report["device"]
    print(f"device report: {md_path}\n               {json_path}")
    if dev.get("fallback_reason"):
        print(f"backend: onnxruntime ({dev['fallback_reason']})")
    else:
        print(f"backend: {dev['backend']}")
    failed = []
    for name, v in report["variants"].items():
        lat = ", ".join(f"b={b} p50 {s['p50_ms']:.3f} ms" for b, s in v["latency"].items())
        ok = v["golden"]["ok"]
        print(f"  {name:<18} golden {'ok  ' if ok else 'FAIL'}  {v['backend']:<11} {lat}")
        if not ok:
            failed.append(name)
    if failed:
        print(f"pela-export: {len(failed)} variant(s) disagree with the golden outputs beyond their tolerance: "
              f"{', '.join(failed)} (details in {md_path})", file=sys.stderr)
        return 1
    return 0


def _device_latency(ns: argparse.Namespace) -> int:
    from .. import api

    api.device_latency(ns.bundle, ns.out, backend=ns.backend, precision=ns.precision, threads=ns.threads,
                       runs=ns.runs, warmup=ns.warmup, engine_cache=ns.engine_cache)
    return 0


def _report(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import api

    ws = Path(ns.workstation)
    out = ns.out or (ws if ws.is_dir() else ws.parent) / "comparison"
    json_path, md_path = api.merge_reports(ws, ns.device_reports, out)
    print(f"comparison: {md_path}\n            {json_path}")
    return 0


def _dispatch(ns: argparse.Namespace) -> int:
    if ns.command == "verify":
        return _verify(ns)
    if ns.command == "device-bench":
        return _device_bench(ns)
    if ns.command == "device-latency":
        return _device_latency(ns)
    if ns.command == "report":
        return _report(ns)
    from .. import api
    from . import args as A

    if ns.command == "inspect":
        print(api.inspect(ns.spec, checkpoint=ns.checkpoint, input_shape=ns.input_shape,
                          ratio=ns.ratio, method=ns.method or "svd", rank_policy=ns.rank_policy,
                          align=ns.align, include=ns.include, exclude=ns.exclude,
                          conv_decomposition=ns.conv_decomposition,
                          structure_spec=A.structure_spec_of(ns.out, ns.structure_spec), tokens=ns.tokens,
                          remeasure=ns.remeasure, max_length=ns.max_length, hidden_state=ns.hidden_state,
                          pretrained=ns.pretrained))
        return 0
    if ns.command == "sweep":
        from ..sweep.command import print_summary

        print_summary(api.sweep_from_args(ns))
        return 0
    cfg = A.config_from_args(ns)
    stage = {"run": api.run, "compress": api.compress, "export": api.export, "bench": api.bench,
             "build": api.build, "package": api.package}[ns.command]
    from ..train.distributed import RankDone, end_rank_unless_main

    try:  # under torchrun only rank 0 writes: the other ranks train with it (run/compress --train), then end
        if ns.command not in ("run", "compress") or cfg.train is None:
            end_rank_unless_main(f"`{ns.command}` has no PELA training to share, so rank 0 runs it alone")
        stage(cfg)
    except RankDone as done:
        print(f"pela-export: {done}", file=sys.stderr)
    return 0


def _parser_for(argv: Sequence[str]) -> argparse.ArgumentParser | int:
    """Device commands get the torch-free parser; without torch, other commands explain what works here."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in DEVICE_COMMANDS:
        return build_parser(device_only=True)
    try:
        return build_parser()
    except ImportError as exc:
        if first is None:
            return build_parser(device_only=True)
        print(f"pela-export: error: `{first}` needs the workstation dependencies, which are not importable here "
              f"({exc})\n  fix: install pela-export with its dependencies (torch, onnx, timm); on a device without "
              f"them only `pela-export verify`, `device-bench` and `device-latency` work", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser_for(args)
    if isinstance(parser, int):
        return parser
    ns = parser.parse_args(args)
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
