"""Options of a pipeline run and where each stage's artifacts live.

One dataclass is shared by the CLI and the Python API, so every stage can be
called alone with the same options and restart from the files of the previous one.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..options import option
from ..cli.device_args import ints
from .compress_options import method_names, policy_names, probe_names

from .stages import STAGE_NAMES

#: The stage order, from the one registered tuple (:data:`.stages.PIPELINE`).
STAGES: tuple[str, ...] = STAGE_NAMES


#: The decomposition used when calibration data is given and --method is not: chosen on the
#: pretrained benchmark (bench/results/minilm_r8.md), not on the nearly low-rank toy models.
DATA_AWARE_METHOD = "whiten"
DATA_AWARE_WHY = "data-aware init measured on pretrained all-MiniLM-L6-v2 / Reuters R8, bench/results/minilm_r8.md"


@dataclass
class RunConfig:
    """All user options of a run; defaults match the CLI's."""

    model: str | None = None
    checkpoint: str | None = None
    input_shape: tuple[int, ...] | None = None
    max_length: int | None = None  # text models: sequence axis max (tokenizer truncation)
    hidden_state: bool = False  # text encoders: also export the last hidden state
    text_column: str | None = None  # text data files: the text column (None: detect)
    label_column: str | None = None  # text data files: the label column (None: detect, or unlabelled)
    out: str | None = None
    device: str = "cpu"
    # compression; which method/policy reads which option is declared where each registers
    # (ratio None: not given; a policy that reads it uses lowrank.DEFAULT_RATIO, recorded as a choice)
    ratio: float | None = option(None, flag="--ratio", type=float, metavar="K",
                                 help="PELA compression ratio k > 1: r = in*out // (k*(in+out))")
    # None: svd, or DATA_AWARE_METHOD when --calib-data is given (the choice is recorded in method_choice)
    method: str | None = option(None, flag="--method", choices=method_names, help="decomposition")
    method_choice: str | None = None
    rank_policy: str = option("ratio", flag="--rank-policy", choices=policy_names,
                              help="rank allocation (default ratio)")
    align: int | None = option(None, flag="--align", type=int,
                               help="round ranks down to a multiple (e.g. 8 for tensor cores)")
    include: list[str] | None = option(None, flag="--include", action="append", metavar="GLOB",
                                       help="layer-name globs to factorize (repeatable; default: attention and MLP "
                                            "linears)")
    exclude: list[str] | None = option(None, flag="--exclude", action="append", metavar="GLOB",
                                       help="layer-name globs to keep dense (repeatable; default: patch embed, norms, "
                                            "head)")
    # structured layer types (pela_export.structured; None = plain low-rank) and their deployment lowering
    structure: str | None = None
    structure_opts: dict[str, Any] | None = None
    structure_base: str | None = None  # adapters/snell: None = lowrank (recorded as an automatic choice)
    share_central: bool = False
    lowering: str = "auto"
    lowering_overrides: dict[str, str] | None = None
    allow_dft: bool = False
    # export
    opset: int = 17
    exporter: str = "dynamo"
    exporter_fallback: bool = False
    dynamic_batch: bool = True
    simplifier: str = "onnxsim"
    # verification
    atol: float | None = None
    rtol: float | None = None
    # benchmark
    data: str | None = None
    eval_samples: int | None = 2000
    runs: int = 30
    warmup: int = 5
    batch_sizes: tuple[int, ...] | None = None  # None: (1, 8), or (1,) with static shapes
    threads: int | None = None
    # data-aware compression and PELA training (train: a pela_export.train.TrainConfig, None = no training)
    calib_data: str | None = None
    calib_samples: int = 256
    energy: float | None = option(None, flag="--energy", type=float,
                                  help="spectral energy to keep per layer (e.g. 0.9)")
    param_budget: float | None = option(None, flag="--param-budget", type=float,
                                        help="parameter budget of the factorized layers: a fraction (<= 1) of "
                                             "their dense parameters or a count")
    asvd_alpha: float | None = option(None, flag="--asvd-alpha", type=float,
                                      help="ASVD exponent on mean |x| (default 0.5)")
    candidate_ranks: tuple[int, ...] | None = option(None, flag="--candidate-ranks", type=ints, metavar="LIST",
                                                     help="ranks to probe (default: 0.25x..2x the uniform rank)")
    # None: "kl" (logits) or "mse" (an embedding output), recorded
    sensitivity_loss: str | None = option(None, flag="--sensitivity-loss", choices=probe_names,
                                          help="loss the sensitivity probe measures on calibration data: kl to the "
                                               "original's outputs (default, no labels needed), mse, or task "
                                               "(cross-entropy, needs labels)")
    train: Any = None
    train_data: str | None = None
    # precision in the graph (fp16 / int8 Q/DQ variants of each FP32 ONNX file)
    precisions: tuple[str, ...] = ("fp16", "int8")
    # name → that precision's options dataclass (its spec's ``options``, pela_export.precision.specs); filled
    # with defaults for every selected precision, and an option given for an unselected one is an error
    precision_options: dict[str, Any] = field(default_factory=dict)
    # TensorRT: the target version for the static parser check / trtexec scripts when
    # TensorRT is absent, and the engine build options (a pela_export.tensorrt.BuildOptions)
    trt_version: str | None = None
    trt: Any = None
    skip: tuple[str, ...] = field(default_factory=tuple)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method is None:
            automatic = self.calib_data is not None and self.structure is None
            self.method = DATA_AWARE_METHOD if automatic else "svd"
            if automatic:
                self.method_choice = (f"--method {DATA_AWARE_METHOD} chosen because --calib-data was given "
                                      f"({DATA_AWARE_WHY}); pass --method svd for plain SVD")
        unknown = [s for s in self.skip if s not in STAGES]
        if unknown:
            raise OptionError(f"unknown stage(s) to skip: {', '.join(unknown)}",
                              fix=f"pass --skip with any of: {', '.join(STAGES)}")
        if self.device not in ("cpu", "cuda"):
            raise OptionError(f"unknown device {self.device!r}", fix="pass --device cpu or --device cuda")
        if self.exporter not in ("dynamo", "legacy"):
            raise OptionError(f"unknown exporter {self.exporter!r}", fix="use the default, or --legacy-exporter")
        if self.batch_sizes is None:
            self.batch_sizes = (1, 8) if self.dynamic_batch else (1,)
        elif not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise OptionError(f"invalid batch sizes {self.batch_sizes}", fix="pass --batch-sizes with positive integers, e.g. 1,8")
        elif not self.dynamic_batch and tuple(self.batch_sizes) != (1,):
            raise OptionError(f"--static-shapes exports batch size 1, but --batch-sizes asks for {list(self.batch_sizes)}",
                              fix="pass --batch-sizes 1 with --static-shapes, or drop --static-shapes")
        from .compress_options import check_compression_options

        check_compression_options(self)  # never ignore a user's option silently (derived from the specs)
        self._check_precision_options()
        from .structured_options import check_structured_options

        check_structured_options(self)
        if self.rank_policy == "sensitivity":
            from ..lowrank.probes import PROBES

            if self.sensitivity_loss is not None:  # None: chosen from the model's output in the compress stage
                PROBES.get(self.sensitivity_loss)
        if self.calib_samples < 1:
            raise OptionError(f"--calib-samples must be >= 1, got {self.calib_samples}", fix="pass --calib-samples 256")
        if self.train is not None:
            self.train.validate()
        if self.eval_samples is not None and self.eval_samples < 1:
            raise OptionError(f"--eval-samples must be >= 1, got {self.eval_samples}", fix="pass --eval-samples 1000, or 0 for all")

    def _check_precision_options(self) -> None:
        from ..precision.spec import check_precision_options

        self.precision_options = check_precision_options(self.precisions, self.precision_options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # nested TrainConfig (a dataclass) becomes a dict too


def default_out_dir(model_name: str) -> Path:
    """``./pela-out/<model-name>`` with path-unsafe characters replaced."""
    return Path("pela-out") / re.sub(r"[^A-Za-z0-9._-]+", "_", model_name)


@dataclass(frozen=True)
class Artifacts:
    """Fixed file names inside the output directory (the restart points)."""

    root: Path

    @property
    def compressed_ckpt(self) -> Path:
        return self.root / "compressed.pt"

    @property
    def lowrank_spec(self) -> Path:
        return self.root / "lowrank.json"

    @property
    def rank_table(self) -> Path:
        return self.root / "ranks.md"

    @property
    def structured_ckpt(self) -> Path:
        """State dict of a structured model (``--structure``); see :mod:`pela_export.structured.saved`."""
        return self.root / "structured.pt"

    @property
    def structured_spec(self) -> Path:
        """Layer kinds, configs, shared tensors, the run's options and (after export) the lowering plan."""
        return self.root / "structured.json"

    def onnx(self, variant: str, simplified: bool = False) -> Path:
        return self.root / f"{variant}{'.sim' if simplified else ''}.onnx"

    def stage_record(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"
