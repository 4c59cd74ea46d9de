"""LSTM ensemble predictor for PNAS: a cell read as a sequence, one token per block.

PNAS (Liu et al., 2018) names two predictors that take cells of any size: an LSTM over
the cell's tokens and an MLP ensemble; :class:`search.surrogate.MLPEnsemble` is the
default here, and :class:`LSTMEnsemble` is the LSTM, as an ensemble of the same kind
(``members`` LSTMs, each on a bootstrap resample with its own initial weights; ``predict``
returns their mean and standard deviation). It reads the *slot* part of a space's
fixed-length encoding (``Encodable.vector``) as a sequence: columns ``[0, tokens_end)``
are ``tokens_end / token_width`` tokens of ``token_width`` columns each (a ``pnas`` block,
an ``nb201`` edge), and a row's sequence ends at its last non-zero token — a cell of b
blocks is b tokens, so a cell one block larger than any seen is one more LSTM step, not a
slot the predictor has never seen filled. The size-free summary columns are not read.

The final hidden state goes through a linear head to the standardised accuracy (squared
error, full-batch Adam, weight decay on weights), as in the MLP ensemble, so the two
differ only in how they read a cell. Hidden size, epochs and warm refits are the MLP's
options. The paper's own LSTM settings (token embedding, output, loss) are not
reproduced: tokens here are the encoding's one-hot rows and the loss is the MLP's.
Deterministic for a seed (CPU), picklable through ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search.surrogate import MLPEnsemble, _check_xy

#: accuracy predictors: the MLP ensemble (default) or the paper's other, an LSTM ensemble
PREDICTORS = ("mlp", "lstm")


def make_predictor(kind: str, space: Any, **options: Any) -> MLPEnsemble | LSTMEnsemble:
    """The ``kind`` predictor for ``space``'s encodings (``options``: members, hidden,
    epochs, seed); ValueError naming the valid kinds."""
    if kind not in PREDICTORS:
        raise ValueError(f"unknown predictor {kind!r}; valid: {', '.join(PREDICTORS)}")
    if kind == "mlp":
        return MLPEnsemble(**options)
    return LSTMEnsemble(space.token_width, space.summary_columns.start, **options)


class LSTMEnsemble:
    """Bootstrap ensemble of LSTMs over token sequences: ``fit(X, y)``,
    ``predict(X) -> (mean, std)``; ``X`` rows are fixed-length encodings."""

    def __init__(self, token_width: int, tokens_end: int, members: int = 5, hidden: int = 32,
                 epochs: int = 200, lr: float = 3e-3, weight_decay: float = 1e-4,
                 bootstrap: bool = True, seed: int = 0) -> None:
        for name, v in (("token_width", token_width), ("tokens_end", tokens_end),
                        ("members", members), ("hidden", hidden), ("epochs", epochs)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if int(tokens_end) % int(token_width):
            raise ValueError(f"tokens_end {tokens_end} is not a multiple of token_width "
                             f"{token_width}")
        if not lr > 0 or weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
        self.token_width, self.tokens_end = int(token_width), int(tokens_end)
        self.members, self.hidden, self.epochs = int(members), int(hidden), int(epochs)
        self.lr, self.weight_decay, self.bootstrap = float(lr), float(weight_decay), bool(bootstrap)
        self.rng = np.random.default_rng(seed)
        self.nets: list[dict[str, np.ndarray]] = []
        self.y_mean, self.y_std = 0.0, 1.0

    @property
    def fitted(self) -> bool:
        return bool(self.nets)

    # -- sequences -------------------------------------------------------------------------
    def _sequences(self, X: np.ndarray) -> tuple[Any, Any]:
        """``(tokens [n, T, w] float32 tensor, lengths [n])``: a row ends at its last
        non-zero token (at least one token)."""
        import torch

        if X.shape[1] < self.tokens_end:
            raise ValueError(f"X has {X.shape[1]} columns, fewer than tokens_end "
                             f"{self.tokens_end}")
        seq = X[:, : self.tokens_end].reshape(len(X), -1, self.token_width)
        used = np.abs(seq).sum(axis=2) > 0
        lengths = np.where(used.any(axis=1), used.shape[1] - np.argmax(used[:, ::-1], axis=1), 1)
        return torch.from_numpy(seq.astype(np.float32)), torch.from_numpy(lengths)

    def _net(self, state: dict[str, np.ndarray] | None, seed: int) -> Any:
        import torch
        from torch import nn

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = nn.ModuleDict({"lstm": nn.LSTM(self.token_width, self.hidden, batch_first=True),
                                 "head": nn.Linear(self.hidden, 1)})
        if state is not None:
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        return net

    @staticmethod
    def _forward(net: Any, packed: Any) -> Any:
        _, (h, _) = net["lstm"](packed)
        return net["head"](h[-1])[:, 0]

    # -- fit / predict -----------------------------------------------------------------------
    def fit(self, X: Any, y: Any, warm_steps: int = 0) -> LSTMEnsemble:
        """``epochs`` full-batch steps per member from fresh weights, or ``warm_steps``
        from the current ones (the target rescaled to the new data's mean and spread)."""
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence

        X, y = _check_xy(X, y)
        assert y is not None
        seq, lengths = self._sequences(X)
        warm = int(warm_steps) > 0 and self.fitted
        old_mean, old_std = self.y_mean, self.y_std
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        t = torch.from_numpy(((y - self.y_mean) / self.y_std).astype(np.float32))
        steps = int(warm_steps) if warm else self.epochs
        nets = []
        for k in range(self.members):
            idx = torch.from_numpy(self.rng.integers(0, len(X), len(X)) if self.bootstrap
                                   else np.arange(len(X)))
            seed = int(self.rng.integers(0, 2**31 - 1))
            net = self._net(self.nets[k] if warm else None, seed)
            if warm:        # the same function under the new target scaling
                with torch.no_grad():
                    net["head"].weight *= old_std / self.y_std
                    net["head"].bias.copy_((net["head"].bias * old_std + old_mean
                                            - self.y_mean) / self.y_std)
            packed = pack_padded_sequence(seq[idx], lengths[idx], batch_first=True,
                                          enforce_sorted=False)
            decay = [p for n, p in net.named_parameters() if "bias" not in n]
            rest = [p for n, p in net.named_parameters() if "bias" in n]
            opt = torch.optim.Adam([{"params": decay, "weight_decay": self.weight_decay},
                                    {"params": rest, "weight_decay": 0.0}], lr=self.lr)
            for _ in range(steps):
                loss = torch.mean((self._forward(net, packed) - t[idx]) ** 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            nets.append({n: v.detach().numpy().copy() for n, v in net.state_dict().items()})
        self.nets = nets
        return self

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the members' predictions, per row."""
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence

        if not self.nets:
            raise ValueError("predict before fit: call fit(X, y) with at least 2 rows first")
        X, _ = _check_xy(X)
        seq, lengths = self._sequences(X)
        packed = pack_padded_sequence(seq, lengths, batch_first=True, enforce_sorted=False)
        with torch.no_grad():
            P = np.stack([self._forward(self._net(s, 0), packed).numpy().astype(np.float64)
                          for s in self.nets])
        P = P * self.y_std + self.y_mean
        return P.mean(axis=0), P.std(axis=0)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state,
                "nets": [{k: v.copy() for k, v in s.items()} for s in self.nets],
                "y_mean": self.y_mean, "y_std": self.y_std}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.nets = [{k: np.array(v) for k, v in s.items()} for s in state["nets"]]
        self.y_mean, self.y_std = float(state["y_mean"]), float(state["y_std"])
