"""``mnas train RUN_DIR [--trial N]``: train a searched architecture on the task and export
it as a deployable model file, with its latency measured on the run's device.

A search ranks children by a short proxy training at a reduced width; its front models
(``models/``) are the full-size architectures with fixed-seed weights, the files whose
latency was measured. This command gives one of them real weights: it builds the trial's
architecture at ``--width`` (default 1.0, the measured one) for the data's classes and
input size, trains it with PyTorch Lightning (SGD + cosine, the proxy's recipe) for
``--epochs``, and writes ``RUN_DIR/trained/trial-N.<format>`` (the run device's model
format) and ``trial-N.json`` (validation accuracy, the latency of that very file on the
run's device, the settings). The validation split is the search's (same data spec,
fraction and seed), so the accuracy is comparable with the proxy's.

``--torch-device cuda`` trains on a GPU (the exported file is the same CPU model). There
the run is reproducible up to the summation order of the few kernels without a
deterministic CUDA form; on the CPU it is exact.

Training writes ``trained/trial-N.ckpt`` (Lightning's checkpoint: weights, optimiser,
schedule, epoch) at the end of every epoch, and ``trial-N.ckpt.json`` (the settings it
was started with). ``--resume`` continues an interrupted training from that checkpoint;
it refuses different settings, which would silently change the recipe. It goes on from
the last finished epoch with its weights, optimiser and schedule; the data order and
dropout draws after that differ from an uninterrupted run's. Both files are removed
once the model is exported.

The run's device is reached before training (an unreachable one fails at once);
``--no-measure`` exports in the format config.json records without contacting it. A
trial already trained, or with an interrupted training, is not trained again without
``--force``, and its old files are replaced only once the new ones are exported and
measured.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from mnas import run as runmod
from mnas.cli import CliError
from mnas.cli.options import plural

TRAINED = "trained"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a searched architecture and export it for the device",
        description="Train one child of a run on the task (default: the complete child "
                    "with the best reward) and export it with its trained weights as the "
                    "run device's model file, measured on that device.")
    p.add_argument("run_dir", help="a folder written by `mnas search`")
    p.add_argument("--trial", type=int, default=None,
                   help="trial number (trials.csv); default: the best reward")
    p.add_argument("--data", default=None,
                   help="data spec (default: the run's, e.g. digits or imagefolder:PATH)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--batch-limit", type=int, default=None,
                   help="at most this many batches per epoch (default: all)")
    p.add_argument("--resolution", type=int, default=None,
                   help="input resolution R (default: the run's proxy resolution, 32)")
    p.add_argument("--width", type=float, default=1.0,
                   help="width multiplier (default 1.0: the architecture whose latency "
                        "the search measured)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="training batch size (default 64, as the search's proxy)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    p.add_argument("--seed", type=int, default=None, help="default: the run's seed")
    p.add_argument("--torch-device", default="cpu", metavar="DEV",
                   help="where to train: cpu (default), cuda or cuda:N; a checkpoint resumes "
                        "on any of them")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training of this trial from its checkpoint "
                        "(trained/trial-N.ckpt; same settings)")
    p.add_argument("--no-measure", action="store_true",
                   help="export only; do not measure the file on the run's device (nor "
                        "contact it, where config.json records its model format)")
    p.add_argument("--force", action="store_true",
                   help="train a trial that is already trained, replacing its "
                        "trained/trial-N files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _pick(trials: list[Any], number: int | None) -> Any:
    done = [t for t in trials if t.ok and t.accuracy is not None]
    if number is None:
        if not done:
            raise ValueError("the run has no complete child to train yet")
        return max(done, key=lambda t: (t.reward if t.reward is not None else -math.inf,
                                        -t.number))
    for t in trials:
        if t.number == number:
            if not t.ok:
                raise ValueError(f"trial {number} did not complete ({t.state}: "
                                 f"{t.reason or 'no reason recorded'}); complete trials: "
                                 f"{_numbers(done)}")
            return t
    raise ValueError(f"no trial {number} in the run; complete trials: {_numbers(done)}")


def _numbers(trials: list[Any]) -> str:
    """The trials' numbers for an error line: the first 20, and how many in all."""
    nums = [str(t.number) for t in trials]
    if not nums:
        return "none"
    more = f", … ({len(nums)} in all)" if len(nums) > 20 else ""
    return ", ".join(nums[:20]) + more


def _checkpoint(folder: Path, number: int, settings: dict[str, Any], resume: bool) -> Path:
    """The trial's checkpoint path. Resuming: it must exist and have been started with
    ``settings``. Starting: any old checkpoint goes, and ``settings`` are written."""
    ckpt = folder / f"trial-{number}.ckpt"
    meta = folder / f"trial-{number}.ckpt.json"
    if resume:
        if not ckpt.is_file():
            raise ValueError(f"no checkpoint {ckpt} to resume; run without --resume")
        try:
            saved = json.loads(meta.read_text())
        except (OSError, ValueError):
            raise ValueError(f"{meta} is missing or unreadable: cannot check the settings "
                             "the checkpoint was started with; run without --resume") from None
        for key, value in settings.items():
            if saved.get(key) != value:
                raise ValueError(f"checkpoint {ckpt.name} was started with {key}="
                                 f"{saved.get(key)!r}, this run has {key}={value!r}: pass "
                                 "the same flags, or --force (without --resume) to start over")
        return ckpt
    folder.mkdir(exist_ok=True)
    ckpt.unlink(missing_ok=True)
    meta.write_text(json.dumps(settings, indent=2) + "\n")
    return ckpt


def _check(args: argparse.Namespace) -> None:
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--batch-limit", args.batch_limit), ("--resolution", args.resolution)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not (math.isfinite(args.width) and args.width > 0):
        raise ValueError(f"--width must be > 0, got {args.width}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    from mnas.train.device import check_device

    check_device(args.torch_device, "--torch-device")


def _finished(folder: Path, number: int) -> list[Path]:
    """A finished training's files: ``trial-N.json`` and its model file (any format)."""
    return sorted(p for p in folder.glob(f"trial-{number}.*") if ".ckpt" not in p.name)


def _refuse_replacing(folder: Path, number: int, resume: bool, force: bool) -> list[Path]:
    """A trained model is a long training's result: another training of the trial may
    replace it only with ``--force``. Returns the finished files it will replace."""
    if resume and force:
        raise ValueError(f"--resume goes on with trial {number}'s interrupted training and "
                         "--force starts it over: give one of them")
    done = _finished(folder, number)
    names = ", ".join(p.name for p in done)
    if resume and done and not (folder / f"trial-{number}.ckpt").is_file():
        raise ValueError(f"no checkpoint to resume: trial {number}'s training finished "
                         f"({names} in {folder}); --force trains it again, replacing them")
    # a checkpoint beside finished files was started with --force (or its export was cut
    # short): resuming it is what was asked for
    if done and not resume and not force:
        raise FileExistsError(f"trial {number} is already trained ({names} in {folder}); "
                              "--force trains it again and replaces them")
    ckpt = folder / f"trial-{number}.ckpt"
    if ckpt.is_file() and not resume and not force:     # epochs a new start would discard
        raise FileExistsError(f"trial {number} has an interrupted training ({ckpt}): "
                              "--resume goes on from it, --force starts over")
    return done


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _target(cfg: dict[str, Any], out: Path, no_measure: bool) -> tuple[str, Any, str | None]:
    """(model format, the latency estimator to measure with or None, why not measured).

    Decided before training: an unreachable device is one line now, not after the
    epochs. ``--no-measure`` never contacts the device where config.json records the
    format; only a run from before ``model_format`` must ask the device for it."""
    scheme = cfg["latency"].partition(":")[0]
    if scheme != "measured":
        what = {"table": "a table", "lut": "a lookup table"}.get(scheme, scheme)
        why = f"the run's latency came from {what} ({cfg['latency']}): no device to measure on"
        return cfg.get("model_format") or "onnx", None, why
    if no_measure and cfg.get("model_format"):
        return cfg["model_format"], None, "--no-measure"
    try:
        latency = runmod.make_latency(cfg, out)
        if not no_measure:
            latency.device.fingerprint()     # reaches a phone (a farm answered already)
    except (ValueError, RuntimeError, OSError) as e:
        if no_measure:
            raise CliError(f"the run's config.json predates model_format, so only its device "
                           f"{cfg['device']} can say which model file to export, and it cannot "
                           f"be reached ({_first_line(e)})") from None
        raise CliError(f"cannot measure on the run's device {cfg['device']} "
                       f"({_first_line(e)}); --no-measure trains and exports the model "
                       "without it") from None
    if no_measure:
        latency.device.close()
        return latency.device.model_format, None, "--no-measure"
    return latency.device.model_format, latency, None


def _searched_accuracy(cfg: dict[str, Any], accuracy: float | None) -> str:
    """What the search scored the child with, named as what it is: a proxy training or a
    table's published accuracy (not a result of this training's task)."""
    if accuracy is None:
        return "no searched accuracy"
    spec = cfg.get("accuracy") or "proxy"
    scheme, _, arg = spec.partition(":")
    if scheme == "proxy":
        return f"proxy {accuracy:.4f}"
    if scheme == "table":
        table, _, column = arg.rpartition("#")
        return f"table accuracy {accuracy:.4f}: {column} in {Path(table).name}"
    return f"searched accuracy {accuracy:.4f}: {spec}"


def run(args: argparse.Namespace) -> int:
    _check(args)
    out = runmod.check_run_folder(args.run_dir)
    cfg = runmod.load_config(out)
    trial = _pick(runmod.load_trials(out, cfg), args.trial)
    replaced = _refuse_replacing(out / TRAINED, trial.number, args.resume, args.force)
    fmt, latency, unmeasured = _target(cfg, out, args.no_measure)
    try:
        return _train(args, cfg, out, trial, fmt, latency, unmeasured, replaced)
    finally:
        if latency is not None:
            latency.device.close()


def _train(args: argparse.Namespace, cfg: dict[str, Any], out: Path, trial: Any, fmt: str,
           latency: Any, unmeasured: str | None, replaced: list[Path]) -> int:
    from mnas.evaluators.proxy import quiet_lightning
    from mnas.spaces import get_space
    from mnas.train.data import make_datamodule

    space = get_space(cfg["space"], **cfg.get("space_options", {}))
    arch = space.decode(trial.arch)
    proxy = cfg.get("proxy", {})
    data = args.data or proxy.get("data") or "digits"
    resolution = args.resolution if args.resolution is not None else _recorded(
        out, proxy, "resolution", 32, lambda v: isinstance(v, int) and not isinstance(v, bool)
        and v >= 1, "a positive integer")
    val_fraction = _recorded(out, proxy, "val_fraction", 0.2,
                             lambda v: isinstance(v, int | float) and 0 < v < 1, "in (0, 1)")
    seed = cfg.get("seed", 0) if args.seed is None else args.seed
    dm = make_datamodule(data, resolution=resolution, batch_size=args.batch_size,
                         val_fraction=val_fraction, seed=cfg.get("seed", 0))
    with quiet_lightning():
        dm.prepare_data()
        dm.setup("fit")

    folder = out / TRAINED
    settings = {"trial": trial.number, "arch": trial.arch, "data": data,
                "resolution": resolution, "width_mult": args.width, "epochs": args.epochs,
                "batch_size": args.batch_size, "batch_limit": args.batch_limit,
                "lr": args.lr, "seed": seed}
    made_folder = not folder.exists()
    ckpt = _checkpoint(folder, trial.number, settings, args.resume)
    try:
        return _fit_and_export(args, cfg, out, trial, fmt, latency, unmeasured, replaced,
                               space, arch, dm, data, resolution, seed, folder, ckpt)
    except BaseException:
        # nothing trained yet (no epoch checkpoint): leave no trace of this attempt
        if not args.resume and not ckpt.is_file():
            ckpt.with_suffix(".ckpt.json").unlink(missing_ok=True)
            if made_folder and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _fit_and_export(args: argparse.Namespace, cfg: dict[str, Any], out: Path, trial: Any,
                    fmt: str, latency: Any, unmeasured: str | None, replaced: list[Path],
                    space: Any, arch: Any, dm: Any, data: str, resolution: int, seed: int,
                    folder: Path, ckpt: Path) -> int:
    import lightning as L

    from mnas.evaluators.proxy import lightning_interrupts, quiet_lightning
    from mnas.train.data import error_line
    from mnas.train.device import check_device, trainer_device
    from mnas.train.module import ClassifierModule

    classes, channels = int(dm.num_classes), int(getattr(dm, "in_channels", 3))

    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    class StartEpoch(Callback):
        """The epoch training starts at: 0, or where a resumed checkpoint left off (None:
        no epoch was left, so training never started)."""

        epoch: int | None = None

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.epoch = int(trainer.current_epoch)

    start = StartEpoch()

    t0 = time.perf_counter()
    with quiet_lightning():
        L.seed_everything(seed, workers=True, verbose=False)
        model = space.build(arch, num_classes=classes, width_mult=args.width,
                            in_channels=channels)
        module = ClassifierModule(model, lr=args.lr, epochs=args.epochs)
        every_epoch = ModelCheckpoint(dirpath=folder, filename=ckpt.stem, save_top_k=1,
                                      enable_version_counter=False)
        trainer = L.Trainer(**trainer_device(check_device(args.torch_device)),
                            max_epochs=args.epochs, limit_train_batches=args.batch_limit,
                            logger=False, callbacks=[every_epoch, start],
                            enable_model_summary=False, enable_progress_bar=not args.no_progress,
                            num_sanity_val_steps=0)
        try:
            # weights_only: the checkpoint is a file in a folder, so unpickle no code from it
            with lightning_interrupts():
                trainer.fit(module, datamodule=dm, ckpt_path=ckpt if args.resume else None,
                            weights_only=True)
                if module.val_accuracy is None and args.resume:  # resumed after the last epoch
                    trainer.validate(module, datamodule=dm, verbose=False)
        except pickle.UnpicklingError:
            raise CliError(f"checkpoint {ckpt} is not plain weights and training state "
                           "(refused unread, none of it run); run without --resume") from None
        except (KeyError, EOFError) as e:
            if not args.resume:
                raise CliError(f"trial {trial.number}: training failed: {error_line(e)}") from None
            # loading a checkpoint of another shape
            raise CliError(f"checkpoint {ckpt} is not one `mnas train` wrote ({e!r}); run "
                           "without --resume") from None
        except RuntimeError as e:               # a corrupt file, or the training failed
            raise CliError(f"trial {trial.number}: {str(e).splitlines()[0] if str(e) else e!r}"
                           ) from None
        except Exception as e:  # noqa: BLE001 - a data module's own error, say
            raise CliError(f"trial {trial.number}: training failed: {error_line(e)}") from None
        except KeyboardInterrupt:
            if ckpt.is_file():
                print(f"mnas: the same command with --resume goes on from {ckpt}",
                      file=sys.stderr)
            raise
    if module.val_accuracy is None:
        raise CliError("training ended without a validation result")
    train_seconds = time.perf_counter() - t0

    path = folder / f"trial-{trial.number}.{fmt}"
    result = folder / f"trial-{trial.number}.json"
    # written under other names until measured: a failure leaves an older result whole
    part = folder / f".part-trial-{trial.number}.{fmt}"
    part_json = folder / f".part-trial-{trial.number}.json"
    try:
        got = _export_and_measure(_cpu_net(module), part, cfg, trial, latency, unmeasured,
                                  (1, channels, resolution, resolution))
        doc = {
            "trial": trial.number, "arch": trial.arch, "space": cfg["space"], "data": data,
            "classes": classes, "resolution": resolution, "width_mult": args.width,
            "epochs": args.epochs, "batch_limit": args.batch_limit, "lr": args.lr,
            "seed": seed, "torch_device": args.torch_device,
            "val_accuracy": float(module.val_accuracy), "accuracy": cfg.get("accuracy"),
            "searched_accuracy": trial.accuracy,
            "proxy_accuracy": trial.accuracy if (cfg.get("accuracy") or "proxy").startswith(
                "proxy") else None,
            "searched_latency_ms": trial.latency_ms, "train_seconds": round(train_seconds, 2),
            "model": str(path.relative_to(out)), **got,
            "resumed_from_epoch": (args.epochs if start.epoch is None else start.epoch
                                   ) if args.resume else None}
        part_json.write_text(json.dumps(doc, indent=2) + "\n")
        part.replace(path)
        part_json.replace(result)
    finally:
        part.unlink(missing_ok=True)
        part_json.unlink(missing_ok=True)
    ckpt.unlink(missing_ok=True)           # exported: the training state has done its job
    ckpt.with_suffix(".ckpt.json").unlink(missing_ok=True)
    for old in replaced:                   # --force: an older export in another format
        if old not in (path, result):
            old.unlink(missing_ok=True)
    lat = (f"not measured ({unmeasured})" if doc["latency_ms"] is None
           else f"{doc['latency_ms']:.3f} ms on {cfg['device']}")
    resumed = f" (resumed at epoch {doc['resumed_from_epoch']})" if args.resume else ""
    print(f"trial {trial.number} {trial.arch}\n  trained {plural(args.epochs, 'epoch')}{resumed} "
          f"on {data} ({plural(classes, 'class')}, {resolution}x{resolution}): val accuracy "
          f"{doc['val_accuracy']:.4f} ({_searched_accuracy(cfg, trial.accuracy)})\n  "
          f"{doc['model']} (1x{channels}x{resolution}x{resolution}): {lat}")
    return 0


def _recorded(out: Path, proxy: dict[str, Any], key: str, default: Any,
              valid: Any, what: str) -> Any:
    """The run's recorded proxy setting ``key`` (``default`` when absent); one line naming
    config.json when the recorded value is not ``what``."""
    v = proxy.get(key)
    if v is None:
        return default
    if not valid(v):
        raise CliError(f"{out / 'config.json'}: proxy.{key} must be {what}, got {v!r}")
    return v


def _cpu_net(module: Any) -> Any:
    """The trained network as the CPU model that is exported (trained on any device)."""
    import torch

    return module.model.eval().cpu().to(memory_format=torch.contiguous_format)


def _export_and_measure(net: Any, path: Path, cfg: dict[str, Any], trial: Any, latency: Any,
                        unmeasured: str | None, shape: tuple[int, int, int, int]
                        ) -> dict[str, Any]:
    """Export ``net`` to ``path`` in its suffix's format and measure it where ``latency``
    says; the result document's model, device and latency keys."""
    from latency.export import file_sha256, get_exporter

    try:
        get_exporter(path.suffix[1:])(net, path, input_shape=shape)
    except RuntimeError as e:
        raise CliError(f"trial {trial.number}: {e}") from None
    doc: dict[str, Any] = {"sha256": file_sha256(path), "device": cfg["device"],
                           "latency_ms": None}
    if latency is None:
        doc["not_measured"] = unmeasured
        return doc
    from latency.estimate import measure_model

    try:
        m = measure_model(latency.device, path, latency.settings)
    except (RuntimeError, ValueError, OSError) as e:
        # the checkpoint stays: --resume exports and measures it again, no epoch lost
        raise CliError(f"trial {trial.number}: measuring its model on {cfg['device']}: "
                       f"{_first_line(e)}; the same command with --resume measures it again "
                       "(with --no-measure: exports it without the device)") from None
    doc["latency_ms"] = m.median_ms
    doc["measurement"] = {k: v for k, v in m.to_dict().items() if k != "samples_ms"}
    start = cfg.get("device_fingerprint")
    if start and m.fingerprint and m.fingerprint != start:
        from devices.base import describe_change

        doc["device_changed"] = describe_change(start, m.fingerprint)
        print(f"mnas: note: the run's device changed since its search "
              f"({doc['device_changed']}): this latency does not compare with the front's",
              file=sys.stderr)
    return doc
