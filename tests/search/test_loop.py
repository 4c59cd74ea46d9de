from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from search.executor import RayExecutor, SerialExecutor
from search.ledger import Ledger
from tests.search.toyloop import MarkedAccuracy, ToySpace, WaitingLatency, make_loop

ROOT = Path(__file__).resolve().parents[2]


def _history(trials):
    return [(t.number, t.arch, t.state, t.reward) for t in trials]


def test_loop_scores_records_and_tolerates_failures(tmp_path):
    trials = make_loop(tmp_path, budget=40).run()
    assert len(trials) == 40
    assert [t.number for t in trials] == list(range(40))
    failed = [t for t in trials if t.state == "failed"]
    assert failed, "the toy space has failing children (v3-v3-…); some must be sampled"
    for t in failed:
        assert t.reason.startswith("accuracy: RuntimeError: loss became NaN")
        assert t.reward is None
    for t in trials:
        if t.ok:
            assert 0 < t.accuracy <= 1 and t.latency_ms > 0 and t.reward > 0
    # the Optuna study holds the same thing
    led = Ledger(tmp_path / "study.db", study_name="toy")
    assert _history(led.trials()) == _history(trials)
    states = {t.state.name for t in led.study.get_trials()}
    assert states == {"COMPLETE", "FAIL"}


def test_duplicates_are_not_rescored(tmp_path):
    trials = make_loop(None, budget=300).run()
    dups = [t for t in trials if "duplicate_of" in t.meta]
    assert dups, "256 archs and 300 children: some must repeat"
    by_number = {t.number: t for t in trials}
    for t in dups:
        first = by_number[t.meta["duplicate_of"]]
        assert first.arch == t.arch and first.accuracy == t.accuracy


def test_resume_after_clean_stop_continues_the_same_sequence(tmp_path):
    ref = _history(make_loop(None, budget=30).run())
    make_loop(tmp_path, budget=12).run()
    resumed = _history(make_loop(tmp_path, budget=30).run())
    assert resumed == ref


def test_a_resume_scores_the_children_asked_before_it_stopped_whatever_the_budget(tmp_path):
    """Stopped two children into a batch of three, then resumed with a budget the run
    already has: the third child asked is still scored, and ``unfinished`` says so
    beforehand (the CLI's note counts it)."""
    ref = _history(make_loop(None, budget=6, batch=3).run())
    loop = make_loop(tmp_path, budget=6, batch=3)

    def stop(trial):
        if trial.number == 4:
            raise KeyboardInterrupt

    loop.callbacks.append(stop)
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    resumed = make_loop(tmp_path, budget=5, batch=3)
    assert (resumed.ledger.finished_count(), resumed.unfinished()) == (5, 1)
    assert _history(resumed.run()) == ref
    assert make_loop(tmp_path, budget=6, batch=3).unfinished() == 0


def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path):
    """Killed anywhere, also while a batch trains on an executor (every slot opened,
    latencies measured, training under way), the run resumes to the same history; the
    attempts alternate between scoring one child at a time and the executor path."""
    budget = 24
    ref = _history(make_loop(None, budget=budget, batch=3).run())
    out = tmp_path / "run"
    rng = random.Random(7)
    kills = 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "tests.search.toyloop", str(out),
                                 str(budget), "3", *(["serial"] if attempt % 2 else [])],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        try:  # the last attempt runs to the end
            proc.wait(timeout=rng.uniform(0.3, 3.0) if attempt < 7 else 300)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0
        break
    assert kills >= 2, "the test must actually interrupt the search"
    led = Ledger(out / "study.db", study_name="toy")
    got = _history(led.trials())
    assert got == ref
    slots = [t.user_attrs["slot"] for t in led.study.get_trials()]
    assert len(slots) == len(set(slots)) == budget


class _Counting(SerialExecutor):
    """Serial, counting the children it trains."""

    def __init__(self) -> None:
        self.trained: list[str] = []

    def submit(self, fn, shared, jobs):
        self.trained += [job[0].encode() for job in jobs]
        return super().submit(fn, shared, jobs)


@pytest.fixture(scope="module")
def ray_executor():
    ex = RayExecutor(2)
    yield ex
    ex.close()


@pytest.mark.parametrize("kind, overlap", [("serial", False), ("serial", True),
                                           ("ray", False), ("ray", True)])
def test_a_batch_on_an_executor_scores_as_one_child_at_a_time(kind, overlap, request):
    """Same children, numbers, failures (with their reasons), duplicates and rewards as
    the loop scoring each child in turn, whether latencies are measured before the batch
    trains or while it trains; on Ray the children train in other processes."""
    executor = _Counting() if kind == "serial" else request.getfixturevalue("ray_executor")
    ref = make_loop(None, budget=60, batch=4).run()
    got = make_loop(None, budget=60, batch=4, executor=executor, overlap=overlap).run()
    full = [(t.number, t.arch, t.state, t.reward, t.reason, t.meta) for t in ref]
    assert [(t.number, t.arch, t.state, t.reward, t.reason, t.meta) for t in got] == full
    assert any(t.state == "failed" for t in got) and any("duplicate_of" in t.meta for t in got)
    if kind == "serial":   # a child seen before is answered, not trained again
        assert len(executor.trained) == len(set(executor.trained))
        assert len(executor.trained) == sum(t.state == "complete" and "duplicate_of" not in
                                            t.meta for t in got) + sum(
            t.state == "failed" for t in got if t.reason.startswith("accuracy"))


def test_a_child_asked_twice_in_one_batch_trains_once():
    from tests.search.toyloop import ToyStrategy

    class Twice(ToyStrategy):
        def ask(self, n=1):
            c = super().ask(1)[0]
            return [c] * n

    ex = _Counting()
    space = ToySpace()
    trials = make_loop(None, budget=6, batch=3, executor=ex,
                       strategy=Twice(space, seed=4)).run()
    assert len(ex.trained) == 2            # one per batch
    for first, *twins in (trials[:3], trials[3:]):
        assert all(t.meta.get("duplicate_of") == first.number and t.reward == first.reward
                   for t in twins)


@pytest.mark.parametrize("overlap", [True, False])
def test_with_overlap_latency_is_measured_while_the_batch_trains(tmp_path, overlap,
                                                                 ray_executor):
    """A latency that can only be measured once its child's training has started: with
    ``overlap`` (a device other than this host) every child gets one; without it (this
    host, which training would slow) the batch trains only after every measurement."""
    trials = make_loop(None, budget=6, batch=2, executor=ray_executor, overlap=overlap,
                       accuracy=MarkedAccuracy(tmp_path),
                       latency=WaitingLatency(tmp_path, 60.0 if overlap else 0.3)).run()
    measured = [t for t in trials if "duplicate_of" not in t.meta]
    if overlap:
        assert all(t.latency_ms for t in measured), [t.reason for t in trials]
    else:
        assert all(t.reason == "latency: TimeoutError: its training had not started"
                   for t in measured)


def test_ray_stores_the_evaluator_and_space_once_per_search(ray_executor, monkeypatch):
    """The accuracy evaluator carries the training data: one copy in Ray's object store
    for the whole search, not one per batch."""
    import ray

    puts = []
    real = ray.put
    monkeypatch.setattr(ray, "put", lambda obj, **kw: puts.append(type(obj)) or real(obj, **kw))
    trials = make_loop(None, budget=8, batch=2, executor=ray_executor).run()
    assert len(trials) == 8 and len(puts) == 2, puts      # 4 batches, 2 shared objects


class _Pooled:
    """The toy latency on a device that measures ``concurrency`` children at once (a
    farm's pool), tallying how many calls overlapped."""

    def __init__(self, concurrency: int) -> None:
        import threading

        self.concurrency, self.active, self.most = concurrency, 0, 0
        self.lock = threading.Lock()

    def __call__(self, space, arch):
        import time

        from tests.search.toyloop import toy_latency

        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.2)     # long enough for the others to start beside it
            return toy_latency(space, arch)
        finally:
            with self.lock:
                self.active -= 1


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_batch_is_measured_as_many_at_once_as_the_device_can(concurrency):
    """Measured while the batch trains (overlap), a batch's children go to the device as
    many at once as it measures (a farm's pool of phones), with the same results as one
    at a time."""
    ref = make_loop(None, budget=24, batch=4).run()
    latency = _Pooled(concurrency)
    got = make_loop(None, budget=24, batch=4, executor=SerialExecutor(), overlap=True,
                    latency=latency).run()
    assert [(t.number, t.arch, t.state, t.reward, t.reason) for t in got] == \
        [(t.number, t.arch, t.state, t.reward, t.reason) for t in ref]
    assert latency.most == concurrency
