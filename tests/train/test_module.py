"""ClassifierModule: trains, guards against NaN, drives ScheduledDropPath, recalibrates BN."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mnas.train.module import ClassifierModule, recalibrate_batchnorm
from tests.train.stubs import TinyArch, TinySpace


def _trainer(epochs: int = 1, limit: int | None = None) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                     limit_train_batches=limit, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0)


def _loader(n: int = 64, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()  # learnable: sign of channel-0 mean
    return DataLoader(TensorDataset(x, y), batch_size=16)


@pytest.mark.parametrize("kw, needle", [
    ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"momentum": 1.0}, "momentum"),
    ({"weight_decay": -1.0}, "weight_decay"), ({"epochs": 0}, "epochs"),
    ({"label_smoothing": 1.0}, "label_smoothing"), ({"bn_recalibration_batches": -1}, "bn_"),
])
def test_bad_hparams(kw, needle):
    with pytest.raises(ValueError, match=needle):
        ClassifierModule(nn.Linear(2, 2), **kw)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        ClassifierModule("resnet")  # type: ignore[arg-type]


def test_nan_logits_raise_runtime_error():
    model = TinySpace().build(TinyArch(4, "nan"), num_classes=2)
    module = ClassifierModule(model, lr=0.05)
    with pytest.raises(RuntimeError, match=r"loss became NaN at step 0"):
        _trainer().fit(module, _loader(), _loader(seed=1))


def test_divergent_lr_raises_runtime_error():
    L.seed_everything(0, verbose=False)
    model = TinySpace().build(TinyArch(8), num_classes=2)
    module = ClassifierModule(model, lr=1e9)
    with pytest.raises(RuntimeError, match=r"loss became NaN at step \d+"):
        _trainer(epochs=3).fit(module, _loader(), _loader(seed=1))


def test_training_progress_reported_each_step():
    model = TinySpace().build(TinyArch(4, "progress"), num_classes=2)
    module = ClassifierModule(model, epochs=2)
    _trainer(epochs=2).fit(module, _loader(), _loader(seed=1))
    p = model.progress
    assert len(p) == 8  # 2 epochs x 4 batches
    assert p[0] == 0.0 and p == sorted(p) and 0.8 < p[-1] < 1.0
    assert p[1] == pytest.approx(1 / 8)


def test_learns_and_reports_val_accuracy():
    L.seed_everything(0, verbose=False)
    model = TinySpace().build(TinyArch(8), num_classes=2)
    module = ClassifierModule(model, lr=0.05, epochs=4)
    _trainer(epochs=4).fit(module, _loader(256), _loader(128, seed=1))
    assert module.val_accuracy is not None and module.val_accuracy > 0.75


def test_cosine_schedule_decays_to_zero():
    model = TinySpace().build(TinyArch(4), num_classes=2)
    module = ClassifierModule(model, lr=0.1, epochs=1)
    trainer = _trainer()
    trainer.fit(module, _loader(), _loader(seed=1))
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # 4 steps of 4 done
    assert sched.lr_lambdas[0](2) == pytest.approx(0.5)              # half-way: lr/2


def test_recalibrate_batchnorm_uses_current_statistics():
    bn = nn.BatchNorm2d(2)
    model = nn.Sequential(bn)
    x = torch.randn(48, 2, 4, 4) * 3 + torch.tensor([5.0, -2.0]).view(1, 2, 1, 1)
    loader = DataLoader(TensorDataset(x, torch.zeros(48)), batch_size=16)
    model.eval()
    used = recalibrate_batchnorm(model, loader, batches=2)
    assert used == 2 and not model.training and bn.momentum == 0.1
    first = x[:32]
    assert torch.allclose(bn.running_mean, first.mean(dim=(0, 2, 3)), atol=1e-4)
    assert bn.num_batches_tracked.item() == 2
    assert recalibrate_batchnorm(nn.Sequential(nn.Linear(2, 2)), loader, 5) == 0
