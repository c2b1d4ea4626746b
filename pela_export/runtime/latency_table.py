"""Per-layer latency tables: what one layer costs dense and as two factors, on the runtime here.

FLOPs say a rank-r factorization costs r·(in+out)/(in·out) of the dense layer; the runtime disagrees
(skinny GEMMs run below peak, unaligned ranks fall off fast paths). So ``--rank-policy latency`` reads
measured numbers: for every layer *shape* (deduplicated: a ViT repeats 4 shapes 12 times) a tiny ONNX
graph of the dense layer and of its two factors at a grid of ranks, timed with ONNX Runtime CPU at the
layer's real input shape (median of several runs after a warm-up).

Tables are JSON, keyed by (runtime, version, device, threads, shape): an entry measured elsewhere or with
another thread count is missing for a lookup, so a stale table is re-measured, never silently reused.
This module imports neither torch nor onnx (the device side reads and writes tables: ``pela-export
device-latency``); the one-layer graphs and the measuring live in :mod:`.layer_graphs`.
"""
from __future__ import annotations

import bisect
import json
import os
import platform
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_json_atomic
from ..errors import ArtifactError

TABLE_SCHEMA = 1
TABLE_KIND = "pela-export latency table"
RUNTIME = "onnxruntime-cpu"
#: At most this many ranks are timed per shape (the rest is interpolated, and says so).
MAX_GRID = 12


@dataclass(frozen=True)
class RuntimeEnv:
    """Where a number was measured; any difference makes a cached entry invalid."""

    runtime: str
    version: str
    device: str
    threads: int

    @property
    def key(self) -> str:
        return f"{self.runtime}|{self.version}|{self.device}|threads={self.threads}"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


@dataclass(frozen=True)
class LayerOp:
    """One layer's computation at its real input shape.

    ``linear``: rows×in_features @ (in→out); ``conv``: input (N, C, H, W), kernel/stride/padding/dilation,
    factorized by ``decomposition`` (channel: kh×kw conv to r then 1×1; spatial: kh×1 then 1×kw).
    """

    kind: str  # "linear" | "conv"
    in_features: int  # linear: K; conv: input channels
    out_features: int  # linear: N; conv: output channels
    bias: bool
    rows: int = 1  # linear: batch × tokens
    input_shape: tuple[int, ...] = ()  # conv: (N, C, H, W)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    decomposition: str = "channel"
    dtype: str = "float32"

    @property
    def key(self) -> str:
        """The shape's identity in a table (everything the timing depends on)."""
        b = int(self.bias)
        if self.kind == "linear":
            return f"linear:rows={self.rows},in={self.in_features},out={self.out_features},bias={b},{self.dtype}"
        dims = "x".join(map(str, self.input_shape))
        pair = ",".join(f"{n}={a}x{c}" for n, (a, c) in
                        (("k", self.kernel), ("s", self.stride), ("p", self.padding), ("d", self.dilation)))
        return f"conv-{self.decomposition}:x={dims},out={self.out_features},{pair},bias={b},{self.dtype}"

    @property
    def feed_shape(self) -> tuple[int, ...]:
        return (self.rows, self.in_features) if self.kind == "linear" else tuple(self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerOp:
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


def rank_grid(max_rank: int, align: int | None = None, limit: int = MAX_GRID) -> list[int]:
    """Ranks to time in [1, max_rank]: aligned ones (multiples of 8/16/64) and unaligned ones between them.

    With ``align`` every rank is a multiple of it (``--align`` would round the others down anyway).
    At most ``limit`` ranks, evenly thinned, always keeping the smallest and the largest.
    """
    if max_rank < 1:
        return []
    if align and align > 1:
        ranks = sorted({m for m in range(align, max_rank + 1, align)})
    else:
        aligned = {8, 16, 32, 48} | set(range(64, max_rank + 1, 64))
        unaligned = {max_rank} | {max(1, round(max_rank * f)) | 1 for f in (0.2, 0.35, 0.5, 0.75)}
        ranks = sorted(r for r in aligned | unaligned if 1 <= r <= max_rank)
    if len(ranks) > limit:
        step = (len(ranks) - 1) / (limit - 1)
        ranks = sorted({ranks[round(i * step)] for i in range(limit)})
    return ranks


@dataclass
class Entry:
    """Measured milliseconds of one shape: dense, and factorized per rank."""

    op: LayerOp
    env: RuntimeEnv
    batch: int
    dense_ms: float
    ranks: dict[int, float] = field(default_factory=dict)

    def ms_at(self, rank: int | None) -> tuple[float, str]:
        """(ms, how): ``how`` is "measured", or says the value was interpolated / clamped."""
        if rank is None or rank < 1:
            return self.dense_ms, "measured"
        if rank in self.ranks:
            return self.ranks[rank], "measured"
        if not self.ranks:
            raise KeyError(f"no factorized timing for {self.op.key}")
        grid = sorted(self.ranks)
        i = bisect.bisect_left(grid, rank)
        if i == 0:
            return self.ranks[grid[0]], f"clamped to rank {grid[0]} (below the measured grid)"
        if i == len(grid):
            return self.ranks[grid[-1]], f"clamped to rank {grid[-1]} (above the measured grid)"
        lo, hi = grid[i - 1], grid[i]
        t = (rank - lo) / (hi - lo)
        return self.ranks[lo] + t * (self.ranks[hi] - self.ranks[lo]), f"interpolated between ranks {lo} and {hi}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.env), "shape": self.op.key, "op": self.op.to_dict(), "batch": self.batch,
                "dtype": self.op.dtype, "dense_ms": self.dense_ms,
                "ranks": {str(r): ms for r, ms in sorted(self.ranks.items())}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Entry:
        env = RuntimeEnv(str(d["runtime"]), str(d["version"]), str(d["device"]), int(d["threads"]))
        return cls(LayerOp.from_dict(d["op"]), env, int(d["batch"]), float(d["dense_ms"]),
                   {int(r): float(ms) for r, ms in d["ranks"].items()})


#: ``measure(op, rank, env) -> ms``; rank None times the dense layer.
MeasureFn = Callable[[LayerOp, "int | None", RuntimeEnv], float]


@dataclass
class LatencyTable:
    """Cached per-shape timings (and whole-model dense timings) from any number of environments."""

    entries: dict[str, Entry] = field(default_factory=dict)  # env.key + "|" + op.key
    models: dict[str, float] = field(default_factory=dict)  # env.key + "|" + model key -> dense model ms

    def get(self, env: RuntimeEnv, op: LayerOp) -> Entry | None:
        """The entry for ``op`` measured in exactly ``env`` (another thread count/device/version: None)."""
        return self.entries.get(f"{env.key}|{op.key}")

    def model_ms(self, env: RuntimeEnv, model: str) -> float | None:
        return self.models.get(f"{env.key}|{model}")

    def set_model_ms(self, env: RuntimeEnv, model: str, ms: float) -> None:
        self.models[f"{env.key}|{model}"] = float(ms)

    def ensure(self, ops: Iterable[LayerOp], env: RuntimeEnv, measure: MeasureFn, batch: int,
               grids: Mapping[str, list[int]] | None = None, align: int | None = None) -> int:
        """Measure what is missing for ``ops`` in ``env`` (each distinct shape once); returns the number of
        timings taken (0: everything came from the cache). ``grids`` (by op key) overrides :func:`rank_grid`."""
        taken = 0
        for op in {o.key: o for o in ops}.values():
            grid = list(grids[op.key]) if grids and op.key in grids else rank_grid(max_saving_rank_of(op), align)
            entry = self.get(env, op)
            if entry is None:
                entry = Entry(op, env, batch, float(measure(op, None, env)))
                taken += 1
                self.entries[f"{env.key}|{op.key}"] = entry
            for r in grid:
                if r not in entry.ranks:
                    entry.ranks[r] = float(measure(op, r, env))
                    taken += 1
        return taken

    def envs(self) -> list[RuntimeEnv]:
        """Every environment with layer entries, in first-seen order."""
        return list({e.env.key: e.env for e in self.entries.values()}.values())

    def layers(self) -> dict[str, tuple[LayerOp, list[int], int]]:
        """op key -> (op, ranks timed in any environment, batch): what another environment must measure."""
        out: dict[str, tuple[LayerOp, list[int], int]] = {}
        for e in self.entries.values():
            op, ranks, batch = out.get(e.op.key, (e.op, [], e.batch))
            out[e.op.key] = (op, sorted(set(ranks) | set(e.ranks)), batch)
        return out

    def models_of(self, env: RuntimeEnv) -> dict[str, float]:
        """model key -> dense model ms measured in ``env``."""
        prefix = f"{env.key}|"
        return {k[len(prefix):]: ms for k, ms in self.models.items() if k.startswith(prefix)}

    def merge(self, other: LatencyTable) -> None:
        """Add ``other``'s entries and model timings (``other`` wins where both have one)."""
        self.entries.update(other.entries)
        self.models.update(other.models)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": TABLE_KIND, "schema": TABLE_SCHEMA,
                "entries": [e.to_dict() for e in self.entries.values()],
                "models": [{"key": k, "dense_ms": ms} for k, ms in self.models.items()]}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temporary sibling, then rename)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """Read a table; ArtifactError naming the file when it is not one this version can read."""
        p = Path(path)
        fix = "delete the file (it is re-measured on the next run)"
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read the latency table ({exc})", fix=fix, where=str(p)) from None
        if not isinstance(d, dict) or d.get("kind") != TABLE_KIND or d.get("schema") != TABLE_SCHEMA:
            raise ArtifactError(f"not a latency table of schema {TABLE_SCHEMA}", fix=fix, where=str(p))
        try:
            entries = [Entry.from_dict(e) for e in d["entries"]]
            models = {str(m["key"]): float(m["dense_ms"]) for m in d.get("models", [])}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"malformed latency table entry ({exc!r})", fix=fix, where=str(p)) from None
        return cls({f"{e.env.key}|{e.op.key}": e for e in entries}, models)


def max_saving_rank_of(op: LayerOp) -> int:
    """Largest rank storing fewer parameters than the dense layer (the matrix of ``op``'s decomposition)."""
    out, inn = matrix_dims(op)
    return (inn * out - 1) // (inn + out)


def matrix_dims(op: LayerOp) -> tuple[int, int]:
    """(out, in) of the matrix the factorization truncates (see :mod:`.conv`)."""
    if op.kind == "linear":
        return op.out_features, op.in_features
    kh, kw = op.kernel
    if op.decomposition == "channel":
        return op.out_features, op.in_features * kh * kw
    return op.out_features * kw, op.in_features * kh
