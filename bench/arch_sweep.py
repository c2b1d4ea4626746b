"""Architecture sweep: does `pela-export export` factorize, export and verify models nobody tuned it for?

For every timm family in ``sweep_models.TIMM_MODELS`` (random weights, reduced image size where the family
takes one) and a few tiny Hugging Face transformers families (random weights, saved to a local directory),
runs the real CLI in a subprocess: ``python -m pela_export export SPEC --out DIR`` (compress at the default
k = 2, export original and compressed to ONNX, simplify, verify both against PyTorch). It records the layers
factorized, the parameter ratio and whether the compressed ONNX verified, or the tool's one-line reason when
it stopped (a traceback counts as a failure of the tool).

    python bench/arch_sweep.py                    # everything (about 30 minutes on 2 quiet CPU cores)
    python bench/arch_sweep.py --only resnet,vit  # a subset, by family
    python bench/arch_sweep.py --only swinv2 --merge  # re-measure those rows in the committed table

Writes bench/results/arch_sweep.{json,md}; the target (>= 95% of the models whose original exports also
export compressed and verified) is stated in the Markdown with the measured share.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sweep_models import TIMM_MODELS  # noqa: E402

TARGET = 0.95


def hf_models(root: Path) -> list[tuple[str, str, str]]:
    """(family, name, hf:DIR spec) for tiny random-weight transformers models saved under ``root``."""
    import torch
    import transformers as T

    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 vocab_size=500, max_position_embeddings=128, num_labels=3)
    configs: list[tuple[str, Any, Any]] = [
        ("bert", T.BertConfig(**small), T.BertForSequenceClassification),
        ("roberta", T.RobertaConfig(**small), T.RobertaForSequenceClassification),
        ("distilbert", T.DistilBertConfig(dim=64, n_layers=2, n_heads=2, hidden_dim=128, vocab_size=500,
                                          max_position_embeddings=128, num_labels=3),
         T.DistilBertForSequenceClassification),
        ("deberta-v2", T.DebertaV2Config(**small), T.DebertaV2ForSequenceClassification),
        ("vit (hf)", T.ViTConfig(image_size=32, patch_size=8, num_channels=3, **{k: v for k, v in small.items()
                                                                               if k not in ("vocab_size", "max_position_embeddings")}),
         T.ViTForImageClassification),
    ]
    out = []
    for family, cfg, cls in configs:
        torch.manual_seed(0)
        d = root / family.replace(" ", "_").replace("(", "").replace(")", "")
        cls(cfg).eval().save_pretrained(d)
        out.append((family, cls.__name__, f"hf:{d}"))
    return out


def _reason(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    err = next((i for i, line in enumerate(lines) if line.startswith("pela-export: error:")), None)
    if err is not None:
        return " ".join(lines[err:err + 2]).replace("pela-export: error: ", "")[:400]
    tb = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
    return f"TRACEBACK: {tb[:300]}"


def run_one(family: str, name: str, spec: str, shape: str | None, out: Path, timeout: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pela_export", "export", spec, "--out", str(out)]
    if shape:
        cmd += ["--input-shape", shape]
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, stderr = -1, f"pela-export: error: timed out after {timeout} s"
    return read_row(family, name, shape, out, rc, stderr, round(time.perf_counter() - t0, 1), " ".join(cmd[1:]))


def read_row(family: str, name: str, shape: str | None, out: Path, rc: int, stderr: str, seconds: float,
             command: str) -> dict[str, Any]:
    """One table row from a finished run's output directory and its exit status / stderr."""
    row: dict[str, Any] = {"family": family, "model": name, "input_shape": shape, "rc": rc, "seconds": seconds,
                           "command": command}
    comp = out / "stages" / "compress.json"
    if comp.is_file():
        c = json.loads(comp.read_text())
        totals = c["compression"]["totals"]
        row.update(layers_factorized=totals["layers_factorized"], layers_eligible=totals["layers_eligible"],
                   param_ratio=c["params"]["compressed"] / c["params"]["original"],
                   kinds=sorted({r.get("kind", "linear") for r in c["compression"]["layers"]
                                 if r["status"] == "factorized"}),
                   dense_reads=sum("directly" in (r.get("reason") or "") for r in c["compression"]["layers"]))
    exp = out / "stages" / "export.json"
    files: dict[str, Any] = {}
    if exp.is_file():
        files = json.loads(exp.read_text())["verification"]["files"]
    orig = [v for v in files.values() if v.get("variant") == "original"]
    compd = [v for v in files.values() if v.get("variant") == "compressed"]
    row["original_verified"] = bool(orig) and all(v["ok"] for v in orig)
    row["compressed_verified"] = bool(compd) and all(v["ok"] for v in compd)
    if rc != 0:
        row["reason"] = _reason(stderr)
        # the original exports first: a stop before any compressed file says whether the original got through
        row["original_exported"] = (out / "original.onnx").is_file()
    else:
        row["original_exported"] = True
    row["traceback"] = row.get("reason", "").startswith("TRACEBACK")
    return row


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    base = [r for r in rows if r["original_exported"]]
    good = [r for r in base if r["compressed_verified"]]
    share = len(good) / len(base) if base else 0.0
    lines = [f"# Architecture sweep: `pela-export export` at the default k = 2 (random weights)", "",
             f"Measured {meta['date']} on {meta['machine']}; torch {meta['torch']}, timm {meta['timm']}, "
             f"transformers {meta['transformers']}. Command: `{meta['command']}`.", "",
             f"**Target: >= {TARGET:.0%} of the models whose original exports also export compressed and verified. "
             f"Measured: {len(good)}/{len(base)} = {share:.1%} — {'met' if share >= TARGET else 'MISSED'}.** "
             f"{sum(r['traceback'] for r in rows)} tracebacks (a stop without a one-line reason).", "",
             "| family | model | input | layers factorized | kinds | params after/before | original | compressed verified | s | reason when not |",
             "|---|---|---|---:|---|---:|---|---|---:|---|"]
    for r in rows:
        lf = f"{r.get('layers_factorized', '-')}/{r.get('layers_eligible', '-')}" if "layers_factorized" in r else "-"
        ratio = f"{r['param_ratio']:.3f}" if "param_ratio" in r else "-"
        kinds = ", ".join(r.get("kinds", [])) + (f" ({r['dense_reads']} read .weight)" if r.get("dense_reads") else "")
        lines.append(f"| {r['family']} | {r['model']} | {r['input_shape'] or 'default'} | {lf} | {kinds or '-'} | "
                     f"{ratio} | {'yes' if r['original_exported'] else 'no'} | "
                     f"{'yes' if r['compressed_verified'] else 'no'} | {r['seconds']} | {r.get('reason', '')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated families")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per model")
    ap.add_argument("--out", default=str(HERE / "results" / "arch_sweep"), help="results path stem")
    ap.add_argument("--merge", action="store_true", help="replace these families' rows in the existing results")
    args = ap.parse_args()
    import platform

    import timm
    import torch
    import transformers

    only = set(args.only.split(",")) if args.only else None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        todo = [(f, n, f"sweep_models:{n}", f"3,{kw['img_size']},{kw['img_size']}" if "img_size" in kw else None)
                for f, n, kw in TIMM_MODELS]
        todo += [(f, n, spec, None) for f, n, spec in hf_models(work / "hf")]
        for family, name, spec, shape in todo:
            if only and family not in only:
                continue
            row = run_one(family, name, spec, shape, work / name, args.timeout)
            rows.append(row)
            print(f"{family:18s} {name:32s} rc={row['rc']:3d} verified={row['compressed_verified']!s:5s} "
                  f"{row['seconds']:6.1f}s {row.get('reason', '')[:100]}", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {os.cpu_count()} CPUs, no GPU",
            "torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__,
            "command": "python bench/arch_sweep.py" + (f" --only {args.only}" if args.only else "")}
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and stem.with_suffix(".json").is_file():
        old = json.loads(stem.with_suffix(".json").read_text())
        fresh = {r["family"]: r for r in rows}
        merged = [fresh.pop(r["family"], r) for r in old["rows"]]
        rows = merged + list(fresh.values())
        meta["command"] = old["meta"]["command"] + f"; then {meta['command']} --merge ({meta['date']})"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "target": TARGET, "rows": rows}, indent=1))
    stem.with_suffix(".md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
