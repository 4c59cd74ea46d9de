"""The ledger: every child is an Optuna trial (maximise accuracy, minimise latency).

SQLite in the run folder by default; any Optuna storage URL (PostgreSQL, …) for many
workers. A trial is opened RUNNING when its candidate is asked and told COMPLETE or
FAIL when scored, so an interrupted search leaves evidence of exactly which children
were in flight. Each trial carries a ``slot`` attribute (``"<batch>:<index>"``) that
ties it to the strategy checkpoint, so resume never loses or repeats a child.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

from mnas.trial import Trial

DIRECTIONS = ["maximize", "minimize"]
#: the user attribute holding a scored child's fields (reward, params, macs, target_ms,
#: reason, timings, measurement, meta); ledgers written before it hold them one each
RESULT = "result"


def storage_url(path_or_url: str | Path) -> str:
    """A plain path becomes an SQLite URL; URLs pass through."""
    s = str(path_or_url)
    return s if "://" in s else f"sqlite:///{Path(s).resolve()}"


class Ledger:
    """Optuna-backed record of trials. ``storage=None`` keeps it in memory (benchmarks)."""

    def __init__(self, storage: str | Path | None = None, study_name: str = "mnas",
                 create: bool = True) -> None:
        """``create=False`` only reads: a missing SQLite file or study is FileNotFoundError
        / ValueError instead of a new, empty one (`mnas front` must not make either)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        url = storage_url(storage) if storage is not None else None
        sqlite = Path(url[len("sqlite:///"):]) if url and url.startswith("sqlite:///") else None
        if not create and sqlite is not None and not sqlite.is_file():
            raise FileNotFoundError(f"storage {url} does not exist")
        try:
            if not create:
                self.study = optuna.load_study(storage=url, study_name=study_name)
            else:
                if sqlite is not None:
                    _create_sqlite_atomically(sqlite, study_name)
                self.study = optuna.create_study(storage=url, study_name=study_name,
                                                 directions=DIRECTIONS, load_if_exists=True)
        except KeyError:    # load_study's answer for a study the storage lacks
            raise ValueError(f"storage {url} holds no study {study_name!r}") from None
        except Exception as e:  # noqa: BLE001 — named below, else re-raised
            # a bad URL or driver, an unreachable server, a file that is no database
            if not isinstance(e, ValueError | ImportError | sqlite3.Error | OSError) and \
                    not type(e).__module__.startswith(("sqlalchemy", "optuna")):
                raise
            raise ValueError(f"cannot open storage {url!r}: {_reason(e)}") from e
        if [d.name.lower() for d in self.study.directions] != DIRECTIONS:
            raise ValueError(f"study {study_name!r} in {url} has other objectives "
                             f"({self.study.directions}); use another --storage or study")
        self.url = url
        self._storage = self.study._storage
        self._cache: dict[int, Any] = {}  # in-memory view of frozen trials, by number

    # -- writing -----------------------------------------------------------------
    def open(self, slot: str, choices: tuple[int, ...], arch: str,
             meta: dict[str, Any] | None = None) -> int:
        """Create a RUNNING trial for an asked candidate; returns its number.

        The trial and its attributes are written in one transaction (a template
        trial), so a kill can never leave a RUNNING trial without its slot.
        """
        import datetime

        attrs = {"slot": slot, "choices": list(choices), "arch": arch}
        if meta:
            attrs["meta"] = _jsonable(meta)
        if self.url is None:    # in memory: no kill to survive, and no deep copy of attrs
            tid = self._storage.create_new_trial(self.study._study_id)
            for key, value in attrs.items():
                self._storage.set_trial_user_attr(tid, key, value)
            return self._storage.get_trial_number_from_id(tid)
        template = self._optuna.trial.FrozenTrial(
            number=-1, state=self._optuna.trial.TrialState.RUNNING, value=None, values=None,
            datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
            distributions={}, user_attrs=attrs, system_attrs={}, intermediate_values={},
            trial_id=-1)
        tid = self._storage.create_new_trial(self.study._study_id, template_trial=template)
        return self._storage.get_trial_number_from_id(tid)

    def record(self, trial: Trial) -> None:
        """Store a scored child: COMPLETE with (accuracy, latency) or FAIL with a reason."""
        tid = self._trial_id(trial.number)
        attrs = {
            "reward": trial.reward, "params": trial.params, "macs": trial.macs,
            "target_ms": trial.target_ms, "reason": trial.reason,
            "train_seconds": round(trial.train_seconds, 3),
            "measure_seconds": round(trial.measure_seconds, 3),
            "measurement": _jsonable(trial.measurement) if trial.measurement else None,
            "meta": _jsonable(trial.meta),
        }
        # one attribute, one transaction: on SQLite each write commits (≈ 2 ms here); the
        # nine fields written one by one made the ledger cost 34 ms a child, now 15
        self._storage.set_trial_user_attr(tid, RESULT, attrs)
        TS = self._optuna.trial.TrialState
        # the storage call Study.tell ends in: tell's checks (values finite, the trial
        # RUNNING) hold here by construction, and its deep copy of the trial was a third
        # of the loop's own cost a child
        if trial.ok and _finite(trial.accuracy) and _finite(trial.latency_ms):
            values: list[float] | None = [float(trial.accuracy), float(trial.latency_ms)]
            state = TS.COMPLETE
        else:
            values, state = None, TS.FAIL
        self._storage.set_trial_state_values(tid, state, values)  # raises if finished
        self._cache.pop(trial.number, None)

    # -- reading ------------------------------------------------------------------
    def _trial_id(self, number: int) -> int:
        return self._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number)

    def frozen(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def by_slot(self) -> dict[str, Any]:
        return {t.user_attrs.get("slot"): t for t in self.frozen() if "slot" in t.user_attrs}

    def finished_count(self) -> int:
        TS = self._optuna.trial.TrialState
        return sum(t.state in (TS.COMPLETE, TS.FAIL, TS.PRUNED) for t in self.frozen())

    def trials(self) -> list[Trial]:
        """All finished trials as :class:`Trial` values, in trial-number order."""
        out = []
        for ft in self.frozen():
            t = to_trial(ft, self._optuna.trial.TrialState)
            if t is not None:
                out.append(t)
        return out


def to_trial(ft: Any, TS: Any) -> Trial | None:
    """A finished Optuna FrozenTrial as a Trial (None while RUNNING/WAITING)."""
    u = ft.user_attrs
    if isinstance(u.get(RESULT), dict):
        u = {**u, **u[RESULT]}
    if ft.state == TS.COMPLETE:
        state, acc, lat = "complete", ft.values[0], ft.values[1]
    elif ft.state in (TS.FAIL, TS.PRUNED):
        state, acc, lat = ("failed" if ft.state == TS.FAIL else "pruned"), None, None
    else:
        return None
    return Trial(number=ft.number, arch=u.get("arch", ""), choices=tuple(u.get("choices", ())),
                 state=state, accuracy=acc, latency_ms=lat, reward=u.get("reward"),
                 params=u.get("params"), macs=u.get("macs"), target_ms=u.get("target_ms"),
                 measurement=u.get("measurement"), reason=u.get("reason") or "",
                 train_seconds=u.get("train_seconds") or 0.0,
                 measure_seconds=u.get("measure_seconds") or 0.0, meta=u.get("meta") or {})


def _create_sqlite_atomically(path: Path, study_name: str) -> None:
    """Create a new SQLite study in a temporary file and rename it into place, so a
    process killed while Optuna creates its schema never leaves a half-made ledger."""
    import optuna

    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}")
    optuna.create_study(storage=storage, study_name=study_name, directions=DIRECTIONS)
    storage.engine.dispose()
    os.replace(tmp, path)


def _reason(e: BaseException) -> str:
    """An error's own first line, without SQLAlchemy's statement and help link."""
    text = str(getattr(e, "orig", None) or e).strip()
    return (text.splitlines()[0] if text else type(e).__name__).removeprefix("(")


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _jsonable(obj: Any) -> Any:
    """Optuna user attrs must be JSON-serialisable; drop bulky raw samples beyond 1,000."""
    return json.loads(json.dumps(obj, default=str))
