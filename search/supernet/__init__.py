"""Weight-shared supernets for ENAS: every child of a space is a path through one module.

A :class:`Supernet` owns one shared module per *(position, operation)* — created lazily
the first time a sampled child needs it, kept in :attr:`Supernet.shared` (an
``nn.ModuleDict``) under a readable key such as ``b3l0|ir`` (``mnasnet``:
one max-width module whose leading channels serve every width) or
``c4b2x~3|sep3x3`` (``nasnet``: likewise at the widest input) — so two children that
run the same operation at the same position use the same parameter tensors (ENAS's
parameter sharing; Pham et al., 2018). A child's forward runs only its own modules. The
modules are built by the block classes the space itself builds from
(:mod:`mnas.blocks`, :mod:`mnas.spaces.cell_ops`), so with the same weights a child in
the supernet computes what the standalone child computes (:meth:`Supernet.to_standalone`
copies them over; the tests check equality).

Lazily created means: a fresh module is initialised from a generator seeded by
``(seed, key)`` (independent of creation order and of the global RNG), switched to the
supernet's mode and memory format, recorded in :attr:`Supernet.created` with the spec
that rebuilds it, and announced through ``new_params_hook`` — the owner points that at
``optimizer.add_param_group`` so the optimiser always holds exactly the supernet's
parameters in creation order. :meth:`checkpoint` / :meth:`load_checkpoint` replay the
creations, so a resumed supernet (and its optimiser state) lines up exactly.

Scoring (:meth:`Supernet.batch_stats`): the child's BatchNorm uses the statistics of the batch being
scored and leaves its running averages alone, dropout is off. The running averages of a
shared BatchNorm mix every child that ever trained through it, so they describe no
child; batch statistics are what ENAS's reward uses too.
"""

from __future__ import annotations

import contextlib
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch
from torch import nn

Spec = tuple[Hashable, ...]

#: compiled paths kept per supernet (arch string -> modules)
PATH_CACHE = 512


def key_seed(seed: int, key: str) -> int:
    """Seed of the initial weights of the shared module ``key``."""
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2**63)


def _slices(big: torch.Size, small: torch.Size) -> tuple[slice, ...]:
    """Index of ``small`` in ``big``: leading channels; a conv kernel's centre."""
    out = [slice(0, n) for n in small]
    if len(small) == 4:
        for d in (2, 3):
            o = (big[d] - small[d]) // 2
            out[d] = slice(o, o + small[d])
    return tuple(out)


class Supernet(nn.Module):
    """Base of the supernets: the lazily grown module table and its checkpointing.

    Subclasses implement :meth:`_build` (spec -> fresh module), :meth:`_compile` (arch ->
    whatever their forward walks, creating modules through :meth:`module`),
    :meth:`_run` and :meth:`child_modules` (standalone submodule path -> shared module).
    """

    def __init__(self, space: Any, num_classes: int, width_mult: float, in_channels: int,
                 seed: int, channels_last: bool) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not (isinstance(width_mult, int | float) and width_mult > 0):
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.space = space
        self.num_classes, self.width_mult = num_classes, float(width_mult)
        self.in_channels, self.seed = in_channels, int(seed)
        self.channels_last = bool(channels_last)
        #: where modules created from now on are placed (set by :meth:`place`)
        self.device = torch.device("cpu")
        self.shared = nn.ModuleDict()
        self.created: list[tuple[str, Spec]] = []
        self.new_params_hook: Callable[[list[nn.Parameter]], None] | None = None
        self._paths: OrderedDict[str, Any] = OrderedDict()

    # -- the shared module table ------------------------------------------------------
    def seeded(self, key: str, factory: Callable[[], nn.Module]) -> nn.Module:
        """``factory()`` with the global RNG seeded from ``(seed, key)`` and restored."""
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues accelerator seeding,
            # which records a stack trace per call (ms each, thousands of modules)
            torch.default_generator.manual_seed(key_seed(self.seed, key))
            m = factory()
        if self.channels_last:
            m = m.to(memory_format=torch.channels_last)
        # initialised on the CPU generator, then moved: the same weights on every device
        return m if self.device.type == "cpu" else m.to(self.device)

    def place(self, device: torch.device | str) -> Supernet:
        """Move the supernet, and every module it creates later, to ``device``."""
        self.device = torch.device(device)
        return self.to(self.device)

    def module(self, key: str, spec: Spec) -> nn.Module:
        """The shared module ``key``, created from ``spec`` on first use."""
        if key in self.shared:
            return self.shared[key]
        if "." in key or not key:
            raise ValueError(f"shared module key {key!r} must be non-empty without '.'")
        m = self.seeded(key, lambda: self._build(spec))
        m.train(self.training)
        self.shared[key] = m
        self.created.append((key, spec))
        params = list(m.parameters())
        if params and self.new_params_hook is not None:
            self.new_params_hook(params)
        return m

    def _build(self, spec: Spec) -> nn.Module:
        raise NotImplementedError

    # -- children ----------------------------------------------------------------------
    def compiled(self, arch: Any) -> Any:
        """The child's path (cached per arch string), creating missing modules."""
        text = arch.encode()
        path = self._paths.get(text)
        if path is None:
            path = self._compile(arch)
            self._paths[text] = path
            if len(self._paths) > PATH_CACHE:
                self._paths.popitem(last=False)
        else:
            self._paths.move_to_end(text)
        return path

    def _compile(self, arch: Any) -> Any:
        raise NotImplementedError

    def _run(self, x: torch.Tensor, path: Any) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, arch: Any) -> torch.Tensor:
        """Logits of child ``arch`` (an arch of the supernet's space) on ``x``."""
        path = self.compiled(arch)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._run(x, path)

    def child_modules(self, arch: Any) -> dict[str, nn.Module]:
        """Standalone submodule path (as ``space.build`` names it) -> the shared module
        the child uses there."""
        raise NotImplementedError

    def path_parameters(self, arch: Any) -> list[nn.Parameter]:
        """The parameters child ``arch`` uses (each once). A module mapped under a path
        inside another mapped module replaces that submodule (a private BatchNorm)."""
        mods = self.child_modules(arch)
        shadowed = {id(p) for name, m in mods.items() for other in mods
                    if other.startswith(name + ".")
                    for p in m.get_submodule(other[len(name) + 1:]).parameters()}
        seen: dict[int, nn.Parameter] = {}
        for m in mods.values():
            for p in m.parameters():
                if id(p) not in shadowed:
                    seen.setdefault(id(p), p)
        return list(seen.values())

    def to_standalone(self, arch: Any) -> nn.Module:
        """``space.build(arch)`` at the supernet's size with the child's shared weights
        (parameters and BatchNorm buffers) copied in. A shared tensor larger than the
        standalone one (a max-width weight) gives its leading channels and, for a larger
        conv kernel, its centre — the slice the child's forward uses."""
        model = self.space.build(arch, num_classes=self.num_classes,
                                 width_mult=self.width_mult, in_channels=self.in_channels)
        with torch.no_grad():
            for name, m in self.child_modules(arch).items():
                src = m.state_dict()
                for key, dst in model.get_submodule(name).state_dict().items():
                    dst.copy_(src[key][_slices(src[key].shape, dst.shape)])
        return model.train(self.training)

    # -- scoring mode --------------------------------------------------------------------
    @contextlib.contextmanager
    def batch_stats(self, arch: Any) -> Iterator[None]:
        """Score child ``arch``: eval mode (no dropout) with BatchNorm on batch statistics
        and its running averages untouched. Only the child's modules are switched (the
        whole table can hold thousands) and everything is restored on exit."""
        mods = {id(m): m for top in self.child_modules(arch).values() for m in top.modules()}
        saved = [(m, m.training, getattr(m, "track_running_stats", None))
                 for m in mods.values()]
        was_training = self.training
        try:
            self.training = False          # this module's own flag (e.g. the head dropout)
            for m in mods.values():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    # training + no tracking: normalise with batch statistics, update nothing
                    m.training, m.track_running_stats = True, False
                else:
                    m.training = False
            yield
        finally:
            self.training = was_training
            for m, training, track in saved:
                m.training = training
                if track is not None:
                    m.track_running_stats = track

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """Picklable copy: the creation history and every weight and buffer (on the CPU)."""
        return {"created": list(self.created),
                "params": {k: v.detach().to("cpu", copy=True)
                           for k, v in self.state_dict().items()}}

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        """Create the checkpoint's modules in its order (announcing each through
        ``new_params_hook``) and load its weights."""
        saved = [(k, tuple(s)) for k, s in state["created"]]
        if saved[: len(self.created)] != self.created:
            raise ValueError("supernet checkpoint does not extend this supernet's modules "
                             f"(first saved {saved[:1]}, here {self.created[:1]})")
        for key, spec in saved[len(self.created):]:
            self.module(key, spec)
        self.load_state_dict(state["params"])
        self._paths.clear()


def make_supernet(space: Any, num_classes: int, width_mult: float = 0.5,
                  in_channels: int = 3, seed: int = 0, channels_last: bool = True,
                  **options: Any) -> Supernet:
    """The supernet of ``space`` (``mnasnet``, ``nasnet`` or ``nb201``); ValueError otherwise.
    ``options`` go to the ``mnasnet`` supernet (``private_bn``, ``zero_gamma``)."""
    name = getattr(space, "name", None)
    if name == "mnasnet":
        from search.supernet.mnasnet import MnasNetSupernet

        return MnasNetSupernet(space, num_classes, width_mult, in_channels, seed,
                               channels_last, **options)
    if name == "nasnet":
        from search.supernet.nasnet import NasNetSupernet

        return NasNetSupernet(space, num_classes, width_mult, in_channels, seed,
                              channels_last)
    if name == "nb201":
        from search.supernet.nb201 import NB201Supernet

        return NB201Supernet(space, num_classes, width_mult, in_channels, seed, channels_last)
    raise ValueError(f"no supernet for space {name!r}; valid: mnasnet, nasnet, nb201")


__all__ = ["Supernet", "key_seed", "make_supernet"]
