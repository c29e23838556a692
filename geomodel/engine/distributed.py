"""Helpers that work with and without torch.distributed (torchrun)."""
from __future__ import annotations

import gc
import os
from typing import Sequence

import torch
import torch.distributed as tdist


def is_enabled() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_enabled() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_enabled() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_enabled():
        tdist.barrier()


def all_reduce_sum(*values: float) -> tuple[float, ...]:
    """Sum plain numbers over ranks (identity without distributed)."""
    if not is_enabled():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if tdist.get_backend() == "nccl":
        t = t.cuda()
    tdist.all_reduce(t)
    return tuple(t.cpu().tolist())


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank `src`'s value of a picklable object on every rank (identity without distributed)."""
    if not is_enabled():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def my_share(items: Sequence) -> Sequence:
    """This rank's contiguous part of `items`, split evenly over the ranks (all of it without distributed)."""
    size = -(-len(items) // world_size())
    return items[rank() * size:(rank() + 1) * size]


def all_gather_object(obj: object) -> list:
    """Every rank's value of a picklable object, in rank order ([obj] without distributed)."""
    if not is_enabled():
        return [obj]
    out: list = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The rank-local module inside DistributedDataParallel (evaluation must not run DDP's collectives)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def check_replicas_agree(model: torch.nn.Module, rtol: float = 1e-6) -> None:
    """Raise if the trainable weights differ between ranks (gradients were not synchronised)."""
    if not is_enabled():
        return
    with torch.no_grad():
        params = [p.detach().double() for p in model.parameters() if p.requires_grad]
        mine = (sum(float(p.sum()) for p in params), sum(float(p.square().sum()) for p in params))
    every: list = [None] * world_size()
    tdist.all_gather_object(every, mine)
    ref = every[0]
    for r, other in enumerate(every):
        if any(abs(a - b) > rtol * max(1.0, abs(b)) for a, b in zip(other, ref)):
            raise RuntimeError(f"rank {r}'s weights differ from rank 0's ({other} vs {ref}): the replicas "
                               "diverged, so gradients were not synchronised (train through the DDP wrapper)")


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


class maybe_init_process_group:
    """Context manager: init torch.distributed when launched by torchrun (gloo on CPU, nccl on CUDA)."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self.started = False

    def __enter__(self) -> "maybe_init_process_group":
        if launched_by_torchrun() and not is_enabled():
            use_cuda = self.device != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
            self.started = True
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.started and is_enabled():
            # Free what still refers to the group (DDP reducers and their pending gloo work sit in
            # reference cycles) while it is alive: freed during interpreter shutdown instead, gloo's
            # threads can abort the process after all the work was saved.
            gc.collect()
            if exc_type is None:
                # Every rank reaches the end before any tears the group down: a rank destroying
                # it while another still talks to it aborted that rank ("terminate called ...").
                tdist.barrier()
            tdist.destroy_process_group()
