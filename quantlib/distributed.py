"""Data parallelism through torchrun: join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK; gloo on
the CPU, nccl on CUDA), wrap a model in DistributedDataParallel, give every rank its share of a DataLoader and sum
numbers over the ranks. Without torchrun (or with WORLD_SIZE=1) it is all the single process: world size 1, no
backend, loaders and models unchanged, so one script runs as one process or many.

Batch semantics: every rank takes ``batch_size`` samples a step (the loader's), so a step's global batch is
``world_size x batch_size``; DistributedDataParallel averages the gradients over the ranks, which for a loss averaged
over its batch is the gradient of that global batch."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the processes training together; ``backend`` is None for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that logs and writes files."""
        return self.rank == 0


SINGLE_PROCESS = ProcessGroup()


def torchrun_env() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) when they are not set."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def current() -> ProcessGroup:
    """The initialised torch.distributed group this process is in, else the single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SINGLE_PROCESS
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), torchrun_env()[2], dist.get_backend())


def is_main_process() -> bool:
    """True on rank 0 of the current group (or of torchrun's environment once the group is gone) and in a single
    process: the process that prints and writes files."""
    return dist.get_rank() == 0 if dist.is_available() and dist.is_initialized() else torchrun_env()[0] == 0


@contextmanager
def process_group(device_type: str) -> Iterator[ProcessGroup]:
    """The processes to train with: an already initialised torch.distributed group as it is; else, under torchrun with
    WORLD_SIZE > 1, a new group (nccl if ``device_type`` is 'cuda', else gloo) destroyed on exit; else the single
    process."""
    rank, world_size, local_rank = torchrun_env()
    if (dist.is_available() and dist.is_initialized()) or world_size == 1:
        yield current()
        return
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def wrap(model: nn.Module, group: ProcessGroup, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (rank 0's weights broadcast, gradients averaged over the ranks); in a
    single process ``model`` itself. Parameters that get no gradient are allowed (``find_unused_parameters``): a
    quantised model's clips under a floor qop are fixed by calibration, yet Parameters."""
    if group.world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper, or ``model`` itself."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def training_loader(loader: Iterable, group: ProcessGroup, seed: int) -> Iterable:
    """This rank's share of a training ``loader``: a DataLoader over the same dataset, batch size, collate function
    and workers with a DistributedSampler (shuffled by ``seed`` + epoch if ``loader`` shuffles; call its
    ``set_epoch`` every epoch). ``loader`` itself in a single process or if it already has a DistributedSampler.
    ValueError if it cannot be shared out (not a DataLoader, a custom sampler or batch sampler)."""
    if group.world_size == 1 or isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader
    if (not isinstance(loader, DataLoader) or loader.batch_size is None
            or type(loader.sampler) not in (RandomSampler, SequentialSampler)):
        raise ValueError(f"Training on {group.world_size} processes needs a DataLoader with a batch_size and "
                         f"shuffle=True/False to share out, or one with a DistributedSampler; got a "
                         f"{type(loader).__name__} with sampler {type(getattr(loader, 'sampler', None)).__name__}: "
                         f"give the DataLoader sampler=DistributedSampler(dataset) yourself.")
    sampler = DistributedSampler(loader.dataset, num_replicas=group.world_size, rank=group.rank,
                                 shuffle=isinstance(loader.sampler, RandomSampler), seed=seed,
                                 drop_last=loader.drop_last)
    return _rebuilt(loader, sampler)


def evaluation_loader(loader: Iterable, group: ProcessGroup) -> Iterable:
    """This rank's share of an evaluation ``loader``: every world_size-th sample from the rank's own, without the
    padding a DistributedSampler adds, so counts summed over the ranks are exactly the whole set's. ``loader`` itself
    in a single process or when it cannot be rebuilt (then every rank sees everything; sums keep the ratios)."""
    if group.world_size == 1 or not isinstance(loader, DataLoader) or loader.batch_size is None or not isinstance(
            loader.sampler, (RandomSampler, SequentialSampler)):
        return loader
    return _rebuilt(loader, _Strided(len(loader.dataset), group.rank, group.world_size))


def broadcast_from_main(tensors: Iterable[torch.Tensor], group: ProcessGroup) -> None:
    """Copy rank 0's values of ``tensors`` (in place) to every rank: a model's buffers after DistributedDataParallel
    training (it copies them before each forward only), or all of a model's state after a stage that every rank ran
    on its own."""
    if group.world_size > 1:
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor, src=0)


def all_reduce_sum(values: Sequence[float], group: ProcessGroup, device: torch.device) -> list[float]:
    """``values`` summed element-wise over the ranks (in float64; on ``device``, which nccl needs to be CUDA)."""
    if group.world_size == 1:
        return [float(v) for v in values]
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


class _Strided(Sampler[int]):
    """The indices rank, rank + world_size, ... below n."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, n, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _rebuilt(loader: DataLoader, sampler: Sampler) -> DataLoader:
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers)
