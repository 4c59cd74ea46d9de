"""``ppo``: the NASNet / MnasNet controller trained with PPO (Zoph et al., 2018; Tan et
al., 2019).

Defaults are NASNet's: 1-layer LSTM with 100 hidden units, lr 3.5e-4, entropy weight
1e-5, baseline = moving average of rewards with decay 0.95, one update per 20 children,
PPO clip 0.2 (the PPO paper's, which NASNet cites). Not given by the papers, so chosen
here: Adam, weights U(−0.1, 0.1) (ENAS's controller init) and ``epochs = 4`` passes of
the clipped objective over each batch (whole batch per step). The ratio's denominator is
the probability each child was *sampled* with, so children asked before an update and
told after it are still weighted correctly.

    L = −mean_k min(ρ_k A_k, clip(ρ_k, 1 − ε, 1 + ε) A_k) − w_H · mean_k H_k,
    ρ_k = P_θ(a_k) / P_old(a_k),  A_k = R_k − b
"""

from __future__ import annotations

import torch

from mnas.spaces.base import SearchSpace
from search.base import register_strategy
from search.strategies._rl import ControllerStrategy, Record


@register_strategy
class PPO(ControllerStrategy):
    """Clipped-ratio policy optimisation over the LSTM controller (NASNet, MnasNet)."""

    name = "ppo"

    def __init__(self, space: SearchSpace, seed: int = 0, hidden: int = 100, layers: int = 1,
                 lr: float = 3.5e-4, init_range: float = 0.1, baseline_decay: float = 0.95,
                 batch: int = 20, entropy_weight: float = 1e-5, clip: float = 0.2,
                 epochs: int = 4, failed_reward: float | None = None) -> None:
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        super().__init__(space, seed, hidden=hidden, layers=layers, lr=lr,
                         init_range=init_range, baseline_decay=baseline_decay, batch=batch,
                         entropy_weight=entropy_weight, failed_reward=failed_reward,
                         clip=float(clip), epochs=int(epochs))
        self.clip, self.epochs = float(clip), int(epochs)

    def _update(self, batch: list[Record], adv: torch.Tensor) -> None:
        old = torch.tensor([lp for _, _, lp, _ in batch], dtype=torch.float32)
        for _ in range(self.epochs):
            logp, ent = self._evaluate(batch)
            ratio = torch.exp(logp - old)
            surr = torch.minimum(ratio * adv,
                                 ratio.clamp(1 - self.clip, 1 + self.clip) * adv)
            loss = -surr.mean() - self.entropy_weight * ent.mean()
            self._step(loss)
