"""The promotion gate: is paper behaving like the backtest? Stages, reviews, overrides and reversion.

``review(store, strategy)`` judges a strategy's paper period against its backtest (the
gate, :mod:`.gate`), ``stage``/``set_stage`` move it research -> paper -> live and back
(:mod:`.stages`), ``ReversionMonitor`` and ``revert`` take a live strategy back to paper
when it leaves its backtest's behaviour (:mod:`.reversion`), ``gate_error_rates`` shows
what the gate can and cannot see (:mod:`.error_rates`). Names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Code": "gate", "Decision": "gate", "GateDecision": "gate", "GateThresholds": "gate",
    "calibrate_gate": "gate", "decisions": "gate", "judge": "gate", "override": "gate", "review": "gate",
    "Stage": "stages", "set_stage": "stages", "stage": "stages", "stage_history": "stages",
    "paper_daily": "paper_metrics",
    "Breach": "reversion", "ReversionMonitor": "reversion", "revert": "reversion",
    "gate_error_rates": "error_rates",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tradebook.promotion' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tradebook.promotion.{module}"), name)


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = sorted(_EXPORTS)
