"""Shared state of one run: resolved model, output directory, stage records.

Stages talk to each other only through files in the output directory (the
compressed checkpoint, ONNX files, ``stages/<stage>.json``), so any stage can be
run alone or restarted from what an earlier run saved.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import ensure_writable_dir
from ..errors import ArtifactError, OptionError
from ..models.base import LoadedModel, Tolerance
from ..models.sources import resolve_model
from .config import Artifacts, RunConfig, default_out_dir
from .records import R, load_record, optional_record, save_record


def log(msg: str) -> None:
    """Progress line on stderr (stdout stays for tables and results)."""
    try:
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold cyan]pela-export[/] {msg}")
    except ImportError:  # rich is a core dependency, but never fail on display
        import sys

        print(f"pela-export {msg}", file=sys.stderr)


@dataclass
class Context:
    """A resolved run: config, original model, artifact paths and automatic choices."""

    cfg: RunConfig
    loaded: LoadedModel
    artifacts: Artifacts
    choices: list[str] = field(default_factory=list)
    _compressed: nn.Module | None = None

    @property
    def tolerance(self) -> Tolerance:
        base = self.loaded.tolerance
        return Tolerance(atol=self.cfg.export.atol if self.cfg.export.atol is not None else base.atol,
                         rtol=self.cfg.export.rtol if self.cfg.export.rtol is not None else base.rtol)

    def note(self, choice: str) -> None:
        """Record something the tool decided on its own (shown in the report) and say it now."""
        if choice not in self.choices:
            self.choices.append(choice)
            log(f"[yellow]note:[/] {choice}")

    def save_record(self, record: R) -> R:
        """Stamp ``record`` with the time and this run's automatic choices, and write ``stages/<stage>.json``."""
        record.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record.automatic_choices = list(self.choices)
        save_record(self.artifacts, record)
        return record

    def load_record(self, kind: type[R], needed_by: str) -> R:
        """The checked record of an earlier stage (ArtifactError naming the file when absent or malformed)."""
        return load_record(self.artifacts, kind, needed_by=needed_by)

    def optional_record(self, kind: type[R], needed_by: str) -> R | None:
        """The record of a stage that may not have run in this output directory (None then)."""
        return optional_record(self.artifacts, kind, needed_by=needed_by)

    def original(self) -> nn.Module:
        return self.loaded.model

    def compressed(self) -> nn.Module:
        """The compressed model, rebuilt from the saved checkpoint (cached for this run)."""
        if self._compressed is None and self.cfg.structure.kind is not None:
            from .structured_saved import load_run_structured

            self._compressed = load_run_structured(self).eval()
        if self._compressed is None:
            from ..lowrank import load_compressed, read_spec

            if not self.artifacts.lowrank_spec.is_file() and self.artifacts.structured_spec.is_file():
                from .structured_saved import saved_kind

                kind = saved_kind(self.artifacts.structured_spec)
                raise ArtifactError(f"{self.artifacts.root} holds a structured model (--structure {kind}), "
                                    "but this run asks for plain low-rank compression",
                                    fix=f"pass --structure {kind} (and its options) to reuse it, or re-run the "
                                        "compress stage (drop --skip compress)")
            spec = read_spec(self.artifacts.lowrank_spec)
            check_spec_matches(spec, self.cfg, self.loaded)
            model, _ = load_compressed(copy.deepcopy(self.loaded.model), self.artifacts.compressed_ckpt,
                                       self.artifacts.lowrank_spec)
            self._compressed = model.eval()
        return self._compressed

    def set_compressed(self, model: nn.Module) -> None:
        self._compressed = model.eval()


def check_spec_matches(spec: dict[str, Any], cfg: RunConfig, loaded: LoadedModel) -> None:
    """Refuse to reuse a saved compression made from another model or with other options."""
    src = spec.get("source", {})
    if src.get("model") != loaded.source:
        raise ArtifactError(f"the compressed model in {cfg.output.out or 'the output directory'} was made from "
                            f"{src.get('model')!r}, not {loaded.source!r}",
                            fix="pass a different --out, or re-run the compress stage")
    from ..lowrank.select import selection_rule

    from .compress_options import effective_ratio

    include, exclude = selection_rule(cfg.compress.include, cfg.compress.exclude)
    asked = {"ratio": effective_ratio(cfg), "method": cfg.compress.method, "rank_policy": cfg.compress.rank_policy,
             "align": cfg.compress.align, "include": include, "exclude": exclude}
    saved = {k: spec.get(k) for k in asked}
    saved_inputs = spec.get("policy_inputs") or {}
    for key in ("energy", "param_budget", "latency_budget", "max_drop", "candidate_ranks"):  # the policy's own options
        value = getattr(cfg.compress, key, None)
        if value is not None and key in saved_inputs:  # given this time, and recorded by the saved run
            asked[key] = list(value) if isinstance(value, tuple) else value
            saved[key] = saved_inputs[key]
    for key, value in asked.items():
        if saved[key] != value:
            raise ArtifactError(f"the saved compression used {key}={saved[key]!r} but this run asks for {value!r}",
                                fix=f"re-run the compress stage (drop --skip compress), or pass the same "
                                    f"--{key.replace('_', '-')} as the saved run")


def prepare(cfg: RunConfig, loaded: LoadedModel | None = None) -> Context:
    """Resolve the model and output directory once per run."""
    if cfg.output.device == "cuda" and not torch.cuda.is_available():
        raise OptionError("--device cuda was given but no CUDA GPU is visible to PyTorch",
                          fix="pass --device cpu, or run on a machine with a CUDA GPU and a CUDA build of torch")
    if loaded is None:
        log(f"resolving model {cfg.model.spec or 'default (embedded digits ViT)'}")
        loaded = resolve_model(cfg.model.spec, cfg.model.checkpoint, cfg.model.input_shape, max_length=cfg.model.max_length,
                               hidden_state=cfg.model.hidden_state, pretrained=cfg.model.pretrained)
    out = Path(cfg.output.out) if cfg.output.out else default_out_dir(loaded.name)
    ensure_writable_dir(out)
    if cfg.output.out is None:
        cfg.output.out = str(out)
    ctx = Context(cfg, loaded, Artifacts(out))
    for choice in (cfg.compress.method_choice, cfg.precision.precision_choice):
        if choice:
            ctx.note(choice)
    if loaded.input_shape_origin != "user":
        ctx.note(f"input shape {list(loaded.input_shape)} taken from the model ({loaded.input_shape_origin})")
    return ctx
