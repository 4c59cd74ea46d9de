"""Search: strategies behind one ask/tell interface, the loop, executors, the ledger."""

from __future__ import annotations

from search.base import (
    STRATEGIES,
    Candidate,
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
)

__all__ = ["STRATEGIES", "Candidate", "Strategy", "get_strategy", "register_strategy",
           "strategy_names"]
