"""Distributed training glue: one ``Trainer`` per process, gradients averaged by DDP.

The library never reads the environment: ``from_torchrun(os.environ)`` is called by the entry
point (``benchmarks/synthesis_ddp.py`` under ``torchrun``), which passes the mapping in. Each rank
draws its own batches (``Generator([seed, rank])``), so the effective batch is
``world_size * batch_size``; DDP broadcasts rank 0's initial weights and all-reduces gradients,
so every replica holds the same parameters after every step (``parameters_agree`` checks it).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    init_method: str
    backend: Literal["gloo", "nccl"] = "gloo"


def from_torchrun(
    environ: Mapping[str, str], backend: Literal["gloo", "nccl"] | None = None
) -> DistributedContext:
    """The context torchrun describes in ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_*``.

    ``backend`` defaults to NCCL when CUDA is available, else gloo.
    """
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", "0"))
        addr, port = environ["MASTER_ADDR"], environ["MASTER_PORT"]
    except KeyError as missing:
        raise ValueError(f"not launched by torchrun: {missing} is not set") from None
    chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    return DistributedContext(rank, world, local, f"tcp://{addr}:{port}", chosen)


def setup(ctx: DistributedContext) -> torch.device:
    """Join the process group; returns this rank's device (``cuda:local_rank`` under NCCL)."""
    dist.init_process_group(
        ctx.backend, init_method=ctx.init_method, rank=ctx.rank, world_size=ctx.world_size
    )
    if ctx.backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cpu")


def teardown() -> None:
    """Leave the process group (no-op when none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on localhost now (for single-machine jobs and tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parameters_agree(parameters: Iterable[torch.Tensor]) -> bool:
    """True when every rank holds bit-identical parameters (compared against rank 0's)."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in parameters])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    same = torch.tensor([int(torch.equal(flat, reference))], device=flat.device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())
