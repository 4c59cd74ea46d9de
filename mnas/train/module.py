"""LightningModule that trains a child network for classification (proxy training).

Optimiser: SGD with momentum (Nesterov) and a per-step cosine learning-rate decay to
zero, as NASNet trained its children (momentum 0.9, L2 weight decay, cosine). The
schedule is per *step*, not per epoch, because a proxy run is one or two epochs. On
the digits proxy this beat Adam/AdamW at 1–2 epochs (see ``benchmarks/proxy_training.py``
for the comparison and the numbers in the module docstring there).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


def check_hparams(lr: float, momentum: float, weight_decay: float, epochs: int,
                  label_smoothing: float) -> None:
    """ValueError naming the first out-of-range training setting."""
    def num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if not (num(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (num(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not (num(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if not (num(label_smoothing) and 0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")


class ClassifierModule(L.LightningModule):
    """Cross-entropy classification of ``model``'s logits with SGD + cosine.

    After validation ``val_accuracy`` holds the last validation epoch's accuracy in
    [0, 1] (also logged as ``val_acc``). A non-finite training loss raises
    ``RuntimeError("loss became NaN at step N ...")`` so the trial fails clearly. If the
    model has ``set_training_progress(p)`` (NASNet's ScheduledDropPath), it is called
    before every training step with the fraction of training done, in [0, 1).
    """

    def __init__(self, model: nn.Module, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 4e-5, epochs: int = 1,
                 label_smoothing: float = 0.0, nesterov: bool = True) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_hparams(lr=lr, momentum=momentum, weight_decay=weight_decay, epochs=epochs,
                      label_smoothing=label_smoothing)
        self.model = model
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.epochs, self.label_smoothing = epochs, float(label_smoothing)
        self.nesterov = bool(nesterov) and momentum > 0
        self.val_accuracy: float | None = None
        self._correct = 0
        self._seen = 0
        self._total_steps = 1
        self._progress = getattr(model, "set_training_progress", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self) -> Any:
        # no weight decay on BatchNorm/bias parameters (standard for mobile nets)
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        opt = torch.optim.SGD([{"params": decay, "weight_decay": self.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=self.lr, momentum=self.momentum, nesterov=self.nesterov)
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, self._total_steps)
                                                 / self._total_steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self._progress is not None:
            self._progress(min(1.0, self.global_step / self._total_steps))
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became NaN at step {self.global_step} "
                               f"(loss={loss.item()}, lr={self.lr:g}): training diverged")
        return loss

    def on_validation_epoch_start(self) -> None:
        self._correct, self._seen = 0, 0

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        pred = self(x).argmax(dim=1)
        self._correct += int((pred == y).sum())
        self._seen += int(y.numel())

    def on_validation_epoch_end(self) -> None:
        if self._seen == 0:
            return
        self.val_accuracy = self._correct / self._seen
        self.log("val_acc", self.val_accuracy, prog_bar=False)
