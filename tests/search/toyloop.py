"""A tiny space + strategy + scorer for loop tests; also runnable as a killable process.

``python -m tests.search.toyloop OUT BUDGET`` runs a checkpointed search in OUT with
random short sleeps inside each child, so a SIGKILL can land anywhere.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from latency.measurement import Measurement
from mnas.decisions import Categorical
from mnas.reward import Reward
from mnas.spaces.base import SearchSpace
from search.base import Strategy
from search.executor import Executor, SerialExecutor
from search.ledger import Ledger
from search.loop import ChildScorer, SearchLoop


@dataclass(frozen=True)
class ToyArch:
    values: tuple[int, ...]

    def encode(self) -> str:
        return "-".join(f"v{v}" for v in self.values)


class ToySpace(SearchSpace):
    name = "toy"

    def decisions(self, children_seen: int = 0):
        return tuple(Categorical(f"d{i}", (0, 1, 2, 3)) for i in range(4))

    def from_choices(self, choices):
        return ToyArch(tuple(int(c) for c in choices))

    def to_choices(self, arch):
        return arch.values

    def decode(self, text):
        try:
            return ToyArch(tuple(int(t[1:]) for t in text.split("-")))
        except ValueError as e:
            raise ValueError(f"bad toy arch {text!r}") from e

    def build(self, arch, num_classes=None, width_mult=1.0, in_channels=3):
        raise NotImplementedError


class ToyStrategy(Strategy):
    """Learns nothing, but its asks depend on everything it was told (so a lost or
    repeated tell changes every later ask)."""

    name = "toy"

    def __init__(self, space, seed=0):
        super().__init__(space, seed)
        self.total = 0.0

    def ask(self, n=1):
        out = []
        for _ in range(n):
            rng = random.Random(hash((self.rng.random(), round(self.total, 9))))
            out.append(self.candidate([rng.randrange(4) for _ in range(4)]))
        return out

    def tell(self, trials):
        for t in trials:
            self.total += t.reward if t.reward is not None else -1.0
            self.children_seen += 1

    def state_dict(self):
        return {**super().state_dict(), "total": self.total}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.total = state["total"]


def toy_accuracy(sleep: float = 0.0):
    def acc(space, arch):
        if sleep:
            time.sleep(random.uniform(0, sleep))
        if arch.values[0] == 3 and arch.values[1] == 3:
            raise RuntimeError("loss became NaN at step 1")  # a failing child
        return (1 + sum(arch.values)) / 13.0
    return acc


def toy_latency(space, arch):
    lat = 1.0 + arch.values[0] * 2 + arch.values[2]
    return Measurement.from_samples([lat] * 5, warmup=0, threads=1, runtime="toy",
                                    runtime_version="0", model_sha256="", device="toy")


class MarkedAccuracy:
    """The toy accuracy, leaving a file per child whose training started (picklable, for
    executors in other processes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def __call__(self, space, arch):
        (self.folder / f"train-{arch.encode()}").touch()
        return toy_accuracy()(space, arch)


class WaitingLatency:
    """The toy latency, measured only once the child's training has started (up to
    ``wait`` seconds; then TimeoutError)."""

    def __init__(self, folder: Path, wait: float) -> None:
        self.folder, self.wait = Path(folder), wait

    def __call__(self, space, arch):
        deadline = time.monotonic() + self.wait
        while not (self.folder / f"train-{arch.encode()}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("its training had not started")
            time.sleep(0.01)
        return toy_latency(space, arch)


def make_loop(out: Path | None, budget: int, sleep: float = 0.0, batch: int = 1,
              executor: Executor | None = None, strategy: Strategy | None = None,
              overlap: bool = False, latency=None, accuracy=None):
    space = ToySpace()
    ledger = Ledger(out / "study.db" if out else None, study_name="toy")
    scorer = ChildScorer(space, accuracy or toy_accuracy(sleep), latency or toy_latency,
                         [Reward(5.0)],
                         count_stats=False)
    return SearchLoop(space, strategy or ToyStrategy(space, seed=1), scorer, ledger=ledger,
                      budget=budget, batch=batch,
                      checkpoint=out / "strategy.ckpt" if out else None, executor=executor,
                      overlap=overlap)


if __name__ == "__main__":
    # OUT BUDGET [BATCH [serial]]: "serial" trains each batch through the executor path
    out, budget = Path(sys.argv[1]), int(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    print("ready", flush=True)  # imports done: the parent's kill timer starts now
    make_loop(out, budget, sleep=0.05, batch=int(sys.argv[3]) if len(sys.argv) > 3 else 1,
              executor=SerialExecutor() if sys.argv[4:] == ["serial"] else None).run()
