"""Where children train: in this process, or as Ray tasks on many cores or machines.

The search loop hands an executor one batch's training jobs at a time (``submit``, then
``collect``); each job is ``fn(*shared, *job)`` and its outcome comes back in job order as
``(value, None)`` or ``(None, exception)``, so a child that fails is a failed trial and
never stops the search. Only training runs here: latency is measured by the loop itself,
one child at a time (one device runs one measurement at a time) — before the batch
trains when the device is this host, which training would slow, or while it trains when
the device is elsewhere (a phone), so that the phone's time is hidden.

* :class:`SerialExecutor` runs the jobs one after another in this process (a loop given
  no executor scores each child in turn instead, without opening the batch first).
* :class:`RayExecutor` runs them as Ray tasks, one CPU each (or one GPU each where
  children train on CUDA): ``workers`` CPUs of a local Ray instance started on first
  use, or any Ray cluster given by ``address`` (``"auto"``: the one this machine belongs
  to). Arguments common to every job (the accuracy evaluator with its data, the space)
  go to Ray's object store once (they must not change during a search). Ray is the
  ``ray`` extra, imported lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

Outcome = tuple[Any, BaseException | None]


class Executor(Protocol):
    workers: int

    def submit(self, fn: Callable[..., Any], shared: Sequence[Any],
               jobs: Sequence[Sequence[Any]]) -> Any:
        """Start ``fn(*shared, *job)`` for every job (an executor may also defer them to
        :meth:`collect`); returns a handle for :meth:`collect`."""

    def collect(self, handle: Any) -> list[Outcome]:
        """The submitted jobs' outcomes, in job order, once all have ended."""

    def close(self) -> None:
        """Release what the executor started."""


class SerialExecutor:
    """The jobs one after another, in this process, when collected."""

    workers = 1

    def submit(self, fn: Callable[..., Any], shared: Sequence[Any],
               jobs: Sequence[Sequence[Any]]) -> Any:
        return fn, tuple(shared), [tuple(j) for j in jobs]

    def collect(self, handle: Any) -> list[Outcome]:
        fn, shared, jobs = handle
        out: list[Outcome] = []
        for job in jobs:
            try:
                out.append((fn(*shared, *job), None))
            except Exception as e:  # noqa: BLE001 — a failing child is a failed trial
                out.append((None, e))
        return out

    def close(self) -> None:
        return None


def _quiet_auth_enabled(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


class RayExecutor:
    """Jobs as Ray tasks: ``workers`` at a time on a local Ray instance, or on the
    cluster at ``address``. ``gpus`` is what one task asks for (1 where children
    train on CUDA, so Ray places one per GPU)."""

    def __init__(self, workers: int, address: str | None = None, gpus: float = 0.0) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if not gpus >= 0:
            raise ValueError(f"gpus per task must be >= 0, got {gpus!r}")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("parallel children need Ray: pip install -e '.[ray]' "
                             "(or run with --workers 1)") from None
        self.workers, self.address, self.gpus = workers, address, float(gpus)
        self._started = False
        self._remote: dict[Callable[..., Any], Any] = {}
        self._shared: dict[int, tuple[Any, Any]] = {}    # id → (object, its ref)

    def _ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            # Ray turns token authentication on for a cluster it starts and says so on
            # every run; that is the state we want, so only the notice goes (its warning
            # that authentication is *off* still shows)
            logging.getLogger("ray._private.authentication.authentication_token_setup") \
                .addFilter(_quiet_auth_enabled)
            kw: dict[str, Any] = {"address": self.address} if self.address else \
                {"num_cpus": self.workers, "num_gpus": None if self.gpus else 0}
            try:
                ray.init(include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False, **kw)
            except ConnectionError as e:    # no cluster at the address given
                lines = str(e).strip().splitlines()
                raise ValueError(f"--ray-address {self.address}: "
                                 f"{lines[0] if lines else 'no Ray cluster there'}") from None
            self._started = True
        return ray

    def connect(self) -> None:
        """Join (or start) the cluster now: a wrong address is found before a run is
        written, not at its first batch."""
        self._ray()

    def check_shareable(self, obj: Any, what: str) -> None:
        """ValueError naming ``what`` unless ``obj`` can be sent to Ray's workers (a data
        module holding a lock or an open file cannot): found before a run is written,
        not at its first batch."""
        from ray import cloudpickle

        try:
            cloudpickle.dumps(obj)
        except Exception as e:  # noqa: BLE001 - pickling fails in many types
            line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ValueError(f"--workers sends {what} to Ray's workers, and it cannot be "
                             f"pickled ({type(e).__name__}: {line}); make it picklable, "
                             "or run without --workers") from None

    def submit(self, fn: Callable[..., Any], shared: Sequence[Any],
               jobs: Sequence[Sequence[Any]]) -> Any:
        if not jobs:
            return []
        ray = self._ray()
        task = self._remote.get(fn)
        if task is None:
            task = self._remote[fn] = ray.remote(num_cpus=1, num_gpus=self.gpus,
                                                 max_retries=0)(fn)
        return [task.remote(*[self._put(ray, s) for s in shared], *job) for job in jobs]

    def _put(self, ray: Any, obj: Any) -> Any:
        """``obj`` in Ray's object store, once per object (the accuracy evaluator carries
        its data: one copy for the whole search, not one per batch)."""
        hit = self._shared.get(id(obj))
        if hit is None or hit[0] is not obj:
            hit = self._shared[id(obj)] = (obj, ray.put(obj))
        return hit[1]

    def collect(self, handle: Any) -> list[Outcome]:
        if not handle:
            return []
        ray = self._ray()
        out: list[Outcome] = []
        for ref in handle:
            try:
                out.append((ray.get(ref), None))
            except ray.exceptions.RayTaskError as e:   # the child's own exception
                cause = e.cause if isinstance(e.cause, BaseException) else e
                out.append((None, cause))
            except ray.exceptions.RayError as e:       # its worker died (e.g. out of memory)
                out.append((None, RuntimeError(f"Ray worker lost: {type(e).__name__}: "
                                               f"{str(e).strip().splitlines()[0]}")))
        return out

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        self._remote.clear()
        self._shared.clear()
