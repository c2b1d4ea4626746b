"""PELA training under ``torchrun``: DistributedDataParallel, sharded global batches, rank-0-only writing.

``torchrun --nproc-per-node N -m pela_export compress ... --train`` starts N copies of the command; each
finds its place from the environment torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``). Every rank
resolves and factorizes the model and keeps its own frozen teacher; the student is wrapped in DDP, which
averages gradients. ``--batch-size`` stays the *global* batch: each rank takes ``batch_size / world_size``
examples of every global batch (:class:`GlobalBatchSampler`), so N processes take the same optimizer steps
on the same examples as one process does, and the trained factors agree within float rounding. Only rank 0
writes (checkpoints, records, models); the others stop after training by raising :class:`RankDone`.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import OptionError

#: Environment variables torchrun sets for every worker (all three, or none).
LAUNCH_VARS: tuple[str, ...] = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
_GROUPS = itertools.count()  # process groups made by this process; every rank makes them in the same order


@dataclass(frozen=True)
class LaunchEnv:
    """This process's place in a torchrun launch; ``world_size == 1`` without torchrun."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launch_env() -> LaunchEnv:
    """Read torchrun's variables; a malformed launch is an :class:`OptionError`, not a hang."""
    present = {k: os.environ[k] for k in LAUNCH_VARS if os.environ.get(k, "") != ""}
    if not present:
        return LaunchEnv()
    try:
        world, rank = int(present["WORLD_SIZE"]), int(present["RANK"])
        local = int(present.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise OptionError(f"torchrun's environment is incomplete or not numbers: "
                          f"{', '.join(f'{k}={os.environ.get(k)!r}' for k in LAUNCH_VARS)}",
                          fix="start the command with `torchrun --nproc-per-node N -m pela_export ...`, or unset "
                              "WORLD_SIZE/RANK/LOCAL_RANK for a single process") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise OptionError(f"torchrun's environment is inconsistent: WORLD_SIZE={world}, RANK={rank}, "
                          f"LOCAL_RANK={local}", fix="start the command with `torchrun`, or unset those variables")
    return LaunchEnv(world, rank, local)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """``batch_size`` is the global batch; each rank takes an equal share, never a silently changed one."""
    if batch_size % world_size:
        lower, upper = batch_size // world_size * world_size, -(-batch_size // world_size) * world_size
        sizes = f"{lower} or {upper}" if lower else f"{upper}"
        raise OptionError(f"--batch-size {batch_size} is the global batch and must split evenly across the "
                          f"{world_size} torchrun processes (world size {world_size})",
                          fix=f"pass --batch-size {sizes} (a multiple of {world_size}), or start torchrun with "
                              f"--nproc-per-node × --nnodes dividing {batch_size}")
    return batch_size // world_size


class RankDone(Exception):
    """Raised by ``compress``/``run`` on torchrun ranks other than 0 once their share of the work (training)
    is done: rank 0 alone writes the outputs. Not an error; the CLI prints it and exits 0."""

    def __init__(self, rank: int, world_size: int, what: str) -> None:
        self.rank, self.world_size = rank, world_size
        super().__init__(f"rank {rank} of {world_size}: {what}; rank 0 writes every output")


def end_rank_unless_main(what: str) -> None:
    """Stop a non-zero torchrun rank here (:class:`RankDone`) before it writes anything."""
    env = launch_env()
    if not env.main:
        raise RankDone(env.rank, env.world_size, what)


@dataclass
class Shard:
    """This rank's part of one global batch. ``weight`` scales the local mean loss so that DDP's average over
    ranks equals the global batch's mean even when the last batch splits unevenly; a rank left with no
    example runs the batch's first one with weight 0 (DDP needs every rank in every step)."""

    indices: torch.Tensor
    batch: torch.Tensor  # the whole global batch (text is padded to its longest row on every rank)
    weight: float

    @property
    def examples(self) -> int:
        """Examples that count (0 for the weight-0 stand-in)."""
        return len(self.indices) if self.weight > 0 else 0


class GlobalBatchSampler:
    """Every rank draws the same permutation for an epoch, cuts it into global batches of ``batch_size`` and
    takes the ``rank``-th of ``world_size`` near-equal parts of each.

    The order depends only on ``seed`` and the epoch (:meth:`set_epoch`), never on the world size: epoch e
    is the (e+1)-th ``randperm`` drawn from a generator seeded with ``seed``, which is the order a single
    process has always used, so one process and N processes step through the same global batches. Unlike
    ``torch.utils.data.DistributedSampler`` nothing is padded or dropped: a last batch that does not split
    evenly is balanced by :attr:`Shard.weight` instead of repeating examples.
    """

    def __init__(self, n: int, batch_size: int, *, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        per_rank_batch(batch_size, world_size)
        self.n, self.batch_size, self.world_size, self.rank, self.seed = n, batch_size, world_size, rank, seed
        self.epoch = 0
        self._gen = torch.Generator().manual_seed(seed)
        self._drawn = -1  # the epoch whose permutation was drawn last
        self._order = torch.arange(n)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """The global permutation of the current epoch (replayed from the seed when epochs are skipped)."""
        if self._drawn > self.epoch:
            self._gen, self._drawn = torch.Generator().manual_seed(self.seed), -1
        while self._drawn < self.epoch:
            self._order = torch.randperm(self.n, generator=self._gen)
            self._drawn += 1
        return self._order

    def generator_state(self) -> torch.Tensor:
        """The data generator's state after this epoch's draw (kept in checkpoints for the format's sake)."""
        self.order()
        return self._gen.get_state()

    def __iter__(self) -> Iterator[Shard]:
        order = self.order()
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            part = torch.tensor_split(batch, self.world_size)[self.rank]
            if len(part):
                yield Shard(part, batch, len(part) * self.world_size / len(batch))
            else:
                yield Shard(batch[:1], batch, 0.0)


@dataclass
class Session:
    """One training run's view of the process group; every method is a no-op for a single process."""

    world_size: int = 1
    rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (so resuming needs the checkpoint on rank 0's disk only)."""
        if not self.distributed:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def sync_from_main(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers (a randomly initialised teacher differs per process)."""
        if self.distributed:
            with torch.no_grad():
                for t in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(t.data, src=0)

    def check_same_model(self, student: nn.Module) -> None:
        """Refuse students whose factor shapes differ between ranks (ranks chosen from per-process data)."""
        shapes = [(n, tuple(p.shape)) for n, p in student.state_dict().items()]
        others = self.gather(shapes)
        for r, theirs in enumerate(others):
            if theirs != others[0]:
                diff = next((f"{a[0]} {a[1]} on rank 0, {b[0]} {b[1]} on rank {r}"
                             for a, b in zip(others[0], theirs) if a != b), "a different number of tensors")
                raise OptionError(f"the factorized student differs between torchrun processes ({diff})",
                                  fix="make the compression deterministic on every process: the same options, "
                                      "--calib-data and --seed (each process factorizes the model itself)")

    def wrap(self, student: nn.Module) -> nn.Module:
        """The module the loop calls forward on: DDP around ``student`` (which syncs rank 0's weights to all)."""
        if not self.distributed:
            return student
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # static_graph: the same parameters take part in every step, also those only the loss reads directly
        return DistributedDataParallel(student, device_ids=ids, output_device=ids[0] if ids else None,
                                       static_graph=True)


def training_device(requested: torch.device, env: LaunchEnv) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA training under torchrun, else ``requested``."""
    if requested.type == "cuda" and env.distributed:
        if env.local_rank >= torch.cuda.device_count():
            raise OptionError(f"LOCAL_RANK {env.local_rank} but this node has {torch.cuda.device_count()} "
                              "visible CUDA GPU(s)", fix="start torchrun with --nproc-per-node at most the number "
                                                         "of GPUs per node (or set CUDA_VISIBLE_DEVICES)")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        return device
    return requested


@contextlib.contextmanager
def session(requested: torch.device) -> Iterator[Session]:
    """Join torchrun's process group for one training run (gloo on CPU, NCCL on CUDA) and leave it after.

    A group the caller initialised already is used and left open; one made here is destroyed on exit, so
    rank 0 continues alone with the later stages while the others end.
    """
    env = launch_env()
    if not env.distributed:
        yield Session(device=requested)
        return
    device = training_device(requested, env)
    backend = "nccl" if device.type == "cuda" else "gloo"
    created = not dist.is_initialized()
    if created:
        # a fresh key prefix per group: one made again in this process (a second training run) must not read
        # the addresses its predecessor left in torchrun's store
        store, _, _ = next(dist.rendezvous("env://", rank=env.rank, world_size=env.world_size))
        store = dist.PrefixStore(f"pela-export/train/{next(_GROUPS)}", store)
        dist.init_process_group(backend=backend, store=store, world_size=env.world_size, rank=env.rank)
    else:
        backend = str(dist.get_backend())
    ok = False
    try:
        yield Session(world_size=dist.get_world_size(), rank=dist.get_rank(), device=device, backend=backend)
        ok = True
    finally:
        if created:
            if ok:
                dist.barrier()
            dist.destroy_process_group()
