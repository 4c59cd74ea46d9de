"""``proxy`` accuracy evaluator: train each child briefly with Lightning, score it on a
held-out validation split.

The proxy is a shrunken child (``width_mult``) at a small input (``resolution``)
trained for ``epochs`` (optionally only ``batch_limit`` batches per epoch). The data
module is built and read once per evaluator and reused by every child. Each call
re-seeds everything with ``seed``, so the same architecture gives the same accuracy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from mnas.evaluate import register_accuracy
from mnas.train.device import check_device, trainer_device

# Lightning (and mnas.train.data / .module, which import it) load when a proxy is built:
# importing it takes seconds, and every search loads this module to register the proxy

_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info logs and advisory warnings (few dataloader workers,
    tiny logging interval, ...) for the duration of a proxy run."""
    saved = {n: logging.getLogger(n).level for n in _LOGGERS}
    for n in _LOGGERS:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
            warnings.filterwarnings("ignore", message=r".*(does not have many workers|"
                                    r"number of training batches|GPU available|TPU available|"
                                    r"tensorboard|LitLogger|litlogger|"
                                    r"does not have a deterministic implementation).*")
            from lightning.fabric.utilities.warnings import PossibleUserWarning
            warnings.simplefilter("ignore", PossibleUserWarning)
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


@contextlib.contextmanager
def lightning_interrupts() -> Iterator[None]:
    """Ctrl-C inside ``Trainer.fit`` goes on as a ``KeyboardInterrupt``.

    Lightning catches the interrupt, shuts down, leaves SIGINT ignored and calls
    ``sys.exit(1)``: a search would end with exit code 1, no word and no way to press
    Ctrl-C again. Here SIGINT's handler comes back and the interruption propagates as
    what it is (the CLI prints it and exits 130; 143 when the signal was a SIGTERM, which
    the CLI's handler recorded). The SIGINT handler from before ``fit`` comes back."""
    before = signal.getsignal(signal.SIGINT)
    try:
        yield
    except SystemExit:
        with contextlib.suppress(ValueError):      # not the main thread: nothing to restore
            signal.signal(signal.SIGINT, signal.default_int_handler if before is None
                          else before)
        raise KeyboardInterrupt from None


class ProxyAccuracy:
    """Callable ``(space, arch) -> float``: validation accuracy in [0, 1] of ``arch``
    trained as a proxy. Raises (e.g. ``RuntimeError`` on NaN loss) when the child fails.

    Defaults are tuned for the default search (10–15 MnasNet children in ≤ 5 minutes on
    2 CPU cores, latency measurement included): digits at 32×32, width 0.5, 2 epochs of
    batch 64 (44 steps), SGD lr 0.05. Measured on this 2-core machine: ≈ 3.3
    CPU-seconds per child (2.5–4.3 s over MobileNetV2, the MnasNet-A1-nearest point and 8
    random children; wall time grows with other load); validation accuracies 0.35–0.91
    (MobileNetV2 0.86, chance 0.10), seed-to-seed s.d. ≈ 0.01–0.02 for most children.
    One epoch costs about half and scored 0.59 vs 0.72 mean accuracy on four children.

    ``threads`` sets torch's intra-op threads during training (restored afterwards);
    1 by default: on a shared 2-core machine two OpenMP threads made a MobileNetV2
    step 20× slower (spin-waiting); one thread can at most forgo the second core.
    ``None`` leaves torch's setting alone.

    ``torch_device`` is where children train: ``"cpu"`` (default), ``"cuda"`` or
    ``"cuda:N"`` (checked at construction against what this machine has). The data stays
    in host memory and each batch is copied over. On CUDA, results are reproducible up to
    the float summation order of kernels without a deterministic CUDA form
    (:func:`mnas.train.device.trainer_device`).
    """

    def __init__(self, data: str = "digits", epochs: int = 2, batch_limit: int | None = None,
                 width_mult: float = 0.5, resolution: int = 32, batch_size: int = 64,
                 lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 4e-5,
                 label_smoothing: float = 0.0, seed: int = 0, val_fraction: float = 0.2,
                 threads: int | None = 1, torch_device: str = "cpu") -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if batch_limit is not None and (isinstance(batch_limit, bool)
                                        or not isinstance(batch_limit, int) or batch_limit < 1):
            raise ValueError(f"batch_limit must be a positive integer or None, got {batch_limit!r}")
        if not (isinstance(width_mult, int | float) and 0 < width_mult < math.inf):
            raise ValueError(f"width_mult must be a positive finite number, got {width_mult!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        from mnas.train.data import make_datamodule
        from mnas.train.module import check_hparams

        self.threads = threads
        self.torch_device = check_device(torch_device)
        self.data, self.epochs, self.batch_limit = data, epochs, batch_limit
        self.width_mult, self.resolution, self.batch_size = float(width_mult), resolution, batch_size
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.label_smoothing, self.seed, self.val_fraction = label_smoothing, seed, val_fraction
        # validate the optimiser settings now, not at the first child
        check_hparams(lr=lr, momentum=momentum, weight_decay=weight_decay, epochs=epochs,
                      label_smoothing=label_smoothing)
        # read the data once, up front: bad paths/specs fail here, not per child
        self.datamodule = make_datamodule(data, resolution=resolution, batch_size=batch_size,
                                          val_fraction=val_fraction, seed=seed)
        if getattr(self.datamodule, "num_classes", None) is None:  # module: specs come set up
            with quiet_lightning():
                self.datamodule.prepare_data()
                self.datamodule.setup("fit")
        self.num_classes = int(self.datamodule.num_classes)
        self.in_channels = int(getattr(self.datamodule, "in_channels", 3))

    def __repr__(self) -> str:
        return (f"ProxyAccuracy(data={self.data!r}, epochs={self.epochs}, "
                f"batch_limit={self.batch_limit}, width_mult={self.width_mult}, "
                f"resolution={self.resolution}, batch_size={self.batch_size}, lr={self.lr}, "
                f"seed={self.seed}, torch_device={str(self.torch_device)!r})")

    def __call__(self, space: Any, arch: Any) -> float:
        # Trainer(deterministic=True) switches torch's global flag on; give the rest of
        # the process (latency export, other evaluators) back what it had
        saved_threads = torch.get_num_threads()
        saved_det = torch.are_deterministic_algorithms_enabled()
        saved_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return self._train(space, arch)
        finally:
            torch.set_num_threads(saved_threads)
            torch.use_deterministic_algorithms(saved_det, warn_only=saved_warn)

    def _train(self, space: Any, arch: Any) -> float:
        import lightning as L

        from mnas.train.module import ClassifierModule

        with quiet_lightning():
            L.seed_everything(self.seed, workers=True, verbose=False)
            model = space.build(arch, num_classes=self.num_classes, width_mult=self.width_mult,
                                in_channels=self.in_channels)
            module = ClassifierModule(model, lr=self.lr, momentum=self.momentum,
                                      weight_decay=self.weight_decay, epochs=self.epochs,
                                      label_smoothing=self.label_smoothing)
            trainer = L.Trainer(
                **trainer_device(self.torch_device), max_epochs=self.epochs,
                limit_train_batches=self.batch_limit, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0, check_val_every_n_epoch=self.epochs,
            )
            with lightning_interrupts():
                trainer.fit(module, datamodule=self.datamodule)
        if module.val_accuracy is None:
            raise RuntimeError("proxy training ended without a validation result")
        return float(module.val_accuracy)


_KEYS = ("data", "epochs", "batch_limit", "width_mult", "resolution", "batch_size", "lr",
         "momentum", "weight_decay", "label_smoothing", "seed", "val_fraction", "threads",
         "torch_device")


@register_accuracy("proxy", "proxy")
def make_proxy(arg: str = "", **context: Any) -> ProxyAccuracy:
    """``proxy`` or ``proxy:DATA`` (DATA is a data spec, e.g. ``proxy:cifar10:/data``).
    Keyword options are :class:`ProxyAccuracy`'s; ``None`` means the default and
    unknown context keys are ignored."""
    opts = {k: context[k] for k in _KEYS if context.get(k) is not None}
    if arg:
        if "data" in opts and opts["data"] != arg:
            raise ValueError(f"accuracy spec 'proxy:{arg}' conflicts with data={opts['data']!r}")
        opts["data"] = arg
    return ProxyAccuracy(**opts)
