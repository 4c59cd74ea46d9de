"""``reinforce``: NAS-RL's controller trained with REINFORCE (Zoph & Le, 2017).

Defaults are the paper's: 2-layer LSTM with 35 hidden units, weights U(−0.08, 0.08),
Adam lr 6e-4, baseline = exponential moving average of previous rewards, and
``m = 8`` children per update (each of the paper's controller replicas sampled m = 8
children per gradient). The baseline decay is not given in the paper; 0.95 (NASNet's
and ENAS's value) is used. One update per batch:

    ∇J ≈ 1/m Σ_k Σ_t ∇ log P(a_t | a_<t) (R_k − b)

``entropy_weight`` (default 0, as in the paper) optionally adds an entropy bonus;
``novel`` (default 0) redraws repeats of already-asked children; ``unconstrained``
(default 0) mixes accuracy alone into every child's advantage; ``conditional`` /
``open_end`` (default off) condition the controller on each child's target (see ``_rl``;
on the hard-reward setting below, conditioning measured at 100/200 children, seeds
100–119: Galaxy S7 0.9495/0.9627 vs 0.9473/0.9641 unconditioned, FPGA 0.9414/0.9694 vs
0.9619/0.9801, so no row uses it).

Small budgets: the paper's lr 6e-4 is tuned for ~10^4 children and barely moves the
policy in 100–200 (on the nb201 table its children are indistinguishable from random
ones). For a few hundred children use ``lr=0.01; batch=4; entropy_weight=0.03;
novel=10``: a faster learner with an entropy bonus strong enough that the policy does
not collapse onto one architecture (higher lr without it collapsed in ~50 children),
chosen on the nb201 table's Galaxy S7 latency column and seeds 100–119, not on the
benchmark's Raspberry Pi column or seeds (``benchmarks/strategies.py`` reports it as
its own row). To cover a front, spread children over several targets with MnasNet's hard
constraint (``--hard --targets …``): with the soft reward every target shares one optimum.
"""

from __future__ import annotations

import torch

from mnas.spaces.base import SearchSpace
from search.base import register_strategy
from search.strategies._rl import ControllerStrategy, Record


@register_strategy
class Reinforce(ControllerStrategy):
    """REINFORCE with an EMA baseline over the LSTM controller (NAS-RL)."""

    name = "reinforce"

    def __init__(self, space: SearchSpace, seed: int = 0, hidden: int = 35, layers: int = 2,
                 lr: float = 6e-4, init_range: float = 0.08, baseline_decay: float = 0.95,
                 batch: int = 8, entropy_weight: float = 0.0,
                 failed_reward: float | None = None,
                 slot_head: bool = True, novel: int = 0, unconstrained: float = 0.0,
                 conditional: bool = False, open_end: bool = False) -> None:
        super().__init__(space, seed, hidden=hidden, layers=layers, lr=lr,
                         init_range=init_range, baseline_decay=baseline_decay, batch=batch,
                         entropy_weight=entropy_weight, failed_reward=failed_reward,
                         slot_head=slot_head, novel=novel, unconstrained=unconstrained,
                         conditional=conditional, open_end=open_end)

    def _update(self, batch: list[Record], adv: torch.Tensor) -> None:
        logp, ent = self._evaluate(batch)
        loss = -(logp * adv).mean()
        if self.entropy_weight:
            loss = loss - self.entropy_weight * ent.mean()
        self._step(loss)
