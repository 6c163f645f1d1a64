"""The training loop both trainers share: AdamW, linear warm-up then cosine decay, early stopping on a
validation score, and a checkpoint after every epoch so an interrupted run resumes where it stopped."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable

from clipstore.results import _AsDict


@dataclass(frozen=True)
class EpochStats(_AsDict):
    """One epoch: mean training loss (NaN for epoch 0, before any step) and validation loss / score."""

    epoch: int
    train_loss: float
    validation_loss: float
    validation_avg_cos: float


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of a step: linear warm-up over `warmup_steps` (at least one), then cosine decay
    to zero at `total_steps`."""
    total = max(1, total_steps)
    warm = max(1, warmup_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


class TrainingLoop:
    """Epochs of AdamW with warm-up + cosine decay, early stopping and per-epoch checkpoints."""

    def __init__(self, model, options, steps_per_epoch: int, checkpoint: str | None, groups: list[dict]):
        """`options` needs epochs, patience, warmup_fraction and weight_decay; `groups` are AdamW parameter
        groups (each with its own `lr`); `checkpoint` is the file the loop saves to and resumes from."""
        import torch

        self.model = model
        self.options = options
        self.optimizer = torch.optim.AdamW(groups, weight_decay=options.weight_decay)
        total = max(1, steps_per_epoch * options.epochs)
        factor = warmup_cosine(total, int(total * options.warmup_fraction))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.checkpoint = checkpoint
        self.epoch = 0
        self.best = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self.bad_epochs = 0
        self.history: list[EpochStats] = []
        self.resumed_from = 0

    def step(self, loss) -> float:
        """One AdamW step on `loss` and one scheduler step; returns the loss value."""
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def resume(self) -> None:
        import torch

        if not self.checkpoint or not os.path.isfile(self.checkpoint):
            return
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best"], state["best_epoch"]
        self.best_state, self.bad_epochs = state["best_state"], state["bad_epochs"]
        self.history = [EpochStats(**row) for row in state["history"]]
        self.resumed_from = self.epoch

    def save(self) -> None:
        import torch

        if not self.checkpoint:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "history": [asdict(row) for row in self.history],
        }
        partial = self.checkpoint + ".partial"
        torch.save(state, partial)
        os.replace(partial, self.checkpoint)  # a checkpoint is whole or absent

    def record(self, train_loss: float, validation_avg_cos: float) -> None:
        self.history.append(EpochStats(self.epoch, train_loss, 1.0 - validation_avg_cos, validation_avg_cos))
        if math.isnan(validation_avg_cos):  # nothing to validate on: keep the latest weights, never stop early
            self.best_epoch, self.bad_epochs = self.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        elif validation_avg_cos > self.best + 1e-6 or self.best_state is None:
            self.best, self.best_epoch, self.bad_epochs = validation_avg_cos, self.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def run(self, train_epoch: Callable[[int], float], validate: Callable[[], float]) -> bool:
        """Train until `epochs` or early stop; returns whether it stopped early. Loads the best weights."""
        if self.epoch == 0 and not self.history:
            self.model.eval()
            self.record(float("nan"), validate())  # epoch 0: the untrained model, the reference to beat
            self.save()
        stopped = False
        while self.epoch < self.options.epochs:
            if self.bad_epochs >= self.options.patience:
                stopped = True
                break
            self.model.train()
            loss = train_epoch(self.epoch)
            self.epoch += 1
            self.model.eval()
            self.record(loss, validate())
            self.save()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
        return stopped
