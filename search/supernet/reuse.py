"""A supernet trained by one ``enas`` search, taken by another (``supernet_from``).

The supernet's accuracies depend on the space and the data, not on the device or the
latency target, so a user searching for several devices can train it once. The file is
a run folder's ``strategy.ckpt``, read by :mod:`search.safe_pickle` (it may come from
elsewhere): its data is rebuilt and none of its code runs. A new run reads and checks it
before anything is written (``Strategy.preflight``) and takes it at the first ask; after
that the run's own checkpoint holds the supernet, so a resumed run never reads the file
again and it may be gone by then.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


def supernet_file(value: str) -> Path | None:
    """``supernet_from`` as a checkpoint file (a run folder means its strategy.ckpt);
    ValueError if there is none."""
    if not value:
        return None
    path = Path(value)
    if path.is_dir():
        path = path / "strategy.ckpt"
    if not path.is_file():
        raise ValueError(f"supernet_from {value!r}: no such checkpoint (give an enas run "
                         "folder or its strategy.ckpt)")
    return path


def read_trained(value: str, name: str, config: dict[str, Any],
                 keys: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The supernet checkpoint, its optimiser state and its shared steps from the
    strategy checkpoint ``value`` names (:func:`supernet_file`), after checking it was a
    ``name`` strategy trained with the same ``keys`` of ``config``; ValueError naming the
    first difference."""
    from search import safe_pickle

    path, where = supernet_file(value), f"supernet_from {value!r}"
    if path is None:
        raise ValueError("supernet_from is empty: nothing to take")
    try:
        with open(path, "rb") as f:
            ck = safe_pickle.load(f)
        state = ck["strategy"] if isinstance(ck, dict) and "strategy" in ck else ck
        saved = state["config"]
        if saved.get("name") != name:
            raise ValueError(f"{where}: a {saved.get('name')!r} checkpoint holds no supernet")
        net, opt, steps = state["supernet"], state["optimizer"], int(state["counters"][1])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError,
            IndexError, AttributeError) as e:
        raise ValueError(f"{where}: not an {name} checkpoint mnas can read ({e})") from None
    for k in keys:
        if saved.get(k) != config[k]:
            raise ValueError(f"{where} was trained with {k}={saved.get(k)!r}, this search "
                             f"has {k}={config[k]!r}: pass the same options")
    return net, opt, steps


def load_momenta(optimizer: Any, state: dict[str, Any]) -> None:
    """Load ``state`` into ``optimizer`` but keep its own settings (lr, weight decay, …):
    the source run's momenta, this run's recipe."""
    own = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, mine in zip(optimizer.param_groups, own, strict=True):
        group.update(mine)
