"""Plain training-loop functions: one epoch, evaluation, early stopping, and `fit`."""
from __future__ import annotations

import csv
import io
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from geomodel.atomic import atomic_write_text
from geomodel.engine import distributed as dist


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu. Resolved once and passed down."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_enabled():  # one GPU per torchrun process
        name = f"cuda:{dist.local_rank()}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda[:N]")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, numpy and torch RNG states as plain types (for weights_only checkpoints)."""
    np_state = np.random.get_state()
    return {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
            "numpy": np_state[1].tolist(), "numpy_pos": int(np_state[2]), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])


@dataclass
class EarlyStopping:
    """Stop when the monitored metric has not improved for `patience` epochs."""

    patience: int = 5
    mode: str = "max"  # "max" for accuracy, "min" for losses
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record one epoch's value; True when it is a new best."""
        better = self.best is None or (value > self.best + self.min_delta if self.mode == "max"
                                       else value < self.best - self.min_delta)
        if better:
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


@dataclass
class Stage:
    """What differs between the two stages' training."""

    name: str  # "region" or "coords": file names and progress labels
    loss: Callable[[nn.Module, dict], torch.Tensor]  # (model, batch on device) -> scalar loss
    evaluate: Callable[[nn.Module, Iterable], dict]  # (model, loader) -> metrics incl. `monitor`
    monitor: str  # key of evaluate()'s dict that early stopping watches
    mode: str  # "max" or "min"


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    device: torch.device, *, grad_clip: float = 1.0, desc: str = "train",
                    autocast_dtype: torch.dtype | None = None) -> dict:
    """One pass over `loader`; returns {"loss": mean training loss}."""
    model.train()
    total, count = 0.0, 0
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)  # fp16 underflows
    bar = tqdm(loader, desc=desc, leave=False, disable=None if dist.is_main() else True)
    for batch in bar:
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        n = len(next(iter(batch.values())))
        total += loss.item() * n
        count += n
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    total, count = dist.all_reduce_sum(total, count)
    return {"loss": total / max(count, 1)}


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    best_epoch: int = -1
    stopped_early: bool = False
    interrupted: bool = False


def write_history(path: Path, history: list[dict]) -> None:
    """Write the per-epoch rows as CSV, replacing the file in one step (a kill never leaves half of it)."""
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row if not isinstance(row[k], (list, dict))))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


def fit(model: nn.Module, stage: Stage, train_loader_for_epoch: Callable[[int], Iterable], val_loader: Iterable,
        *, optimizer: torch.optim.Optimizer, scheduler: object, epochs: int, patience: int, grad_clip: float,
        device: torch.device, out_dir: Path, save_best: Callable[[nn.Module, dict], None],
        save_last: Callable[[dict], None], resume_state: dict | None = None, seed: int = 0,
        autocast_dtype: torch.dtype | None = None, log: Callable[[str], None] = print) -> FitResult:
    """Train with early stopping, keeping the best checkpoint and a resumable last one.

    Each epoch's randomness is seeded from (seed, epoch), so a run resumed from the
    last checkpoint continues exactly as the uninterrupted run would. Ctrl-C (or
    SIGTERM, see `install_sigterm_as_interrupt`) stops at once: the last completed
    epoch is already on disk, and a save it interrupts leaves the previous file whole.
    """
    early = EarlyStopping(patience=patience, mode=stage.mode)
    result = FitResult()
    start = 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        if scheduler is not None and resume_state.get("scheduler") is not None:
            scheduler.load_state_dict(resume_state["scheduler"])
        early.load_state_dict(resume_state["early_stopping"])
        result.history = list(resume_state["history"])
        if resume_state.get("rng") is not None:  # torch is reseeded per epoch; this restores python/numpy too
            set_rng_state(resume_state["rng"])
        start = int(resume_state["epoch"]) + 1
        log(f"[{stage.name}] resuming after epoch {start} (best {stage.monitor}={early.best})")
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    saved = start  # epochs completed and on disk in the resumable checkpoint
    try:
        for epoch in range(start, epochs):
            if early.should_stop:
                result.stopped_early = True
                break
            torch.manual_seed(seed * 100_003 + epoch)
            loader = train_loader_for_epoch(epoch)
            train = train_one_epoch(model, loader, stage.loss, optimizer, device, grad_clip=grad_clip,
                                    desc=f"{stage.name} epoch {epoch + 1}/{epochs}", autocast_dtype=autocast_dtype)
            # Rank 0 scores the whole validation set with its plain module (no DDP collectives) and
            # every rank takes its numbers, so scheduler and early-stopping decisions agree everywhere.
            metrics = stage.evaluate(dist.unwrap_ddp(model), val_loader) if dist.is_main() else None
            metrics = dist.broadcast_object(metrics)
            if scheduler is not None:
                scheduler.step(metrics[stage.monitor]) if plateau else scheduler.step()
            row = {"epoch": epoch + 1, "train_loss": train["loss"], **{f"val_{k}": v for k, v in metrics.items()
                                                                      if not isinstance(v, (list, dict))},
                   "lr": optimizer.param_groups[0]["lr"]}
            result.history.append(row)
            improved = early.step(metrics[stage.monitor], epoch)
            if dist.is_main():
                log(f"[{stage.name}] epoch {epoch + 1}/{epochs} train_loss={train['loss']:.4f} "
                    f"val_{stage.monitor}={metrics[stage.monitor]:.4f}" + (" *" if improved else ""))
                if improved:
                    save_best(model, metrics)
                write_history(out_dir / f"{stage.name}_history.csv", result.history)
                save_last({"epoch": epoch, "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict() if scheduler is not None else None,
                           "early_stopping": early.state_dict(), "history": result.history,
                           "rng": rng_state()})
            saved = epoch + 1
            dist.barrier()
        else:
            result.stopped_early = False
        if early.should_stop:
            result.stopped_early = True
        dist.check_replicas_agree(model)
    except KeyboardInterrupt:
        result.interrupted = True
        if dist.is_main():
            last = out_dir / f"{stage.name}_last.pt"
            where = (f"epoch {saved}/{epochs} is saved in {last}" if saved
                     else "no epoch had finished, so there is nothing to resume from yet")
            log(f"\n[{stage.name}] interrupted: {where}. Rerun the same command with --resume to continue.")
    result.best_epoch = early.best_epoch + 1
    result.best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
    return result


def cosine_with_warm_restarts(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=5)


def install_sigterm_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C so schedulers that stop jobs politely get the same clean exit."""
    try:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not in the main thread
        pass
