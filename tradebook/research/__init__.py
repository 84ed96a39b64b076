"""Research: one strategy definition, its causality checks, statistics of trials, backtests and sweeps.

``import tradebook.research`` stays light: names are imported when first used, and vectorbt, arch
and scipy only inside the functions that need them.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Bars": "tradebook.research.bars",
    "Strategy": "tradebook.research.strategy",
    "compute_targets": "tradebook.research.strategy",
    "check_lookahead": "tradebook.research.causality",
    "check_trailing_window": "tradebook.research.causality",
    "prepare": "tradebook.research.causality",
    "prepare_sweep": "tradebook.research.causality",
    "LookaheadReport": "tradebook.research.causality",
    "TrailingReport": "tradebook.research.causality",
    "PreparedStrategy": "tradebook.research.causality",
    "sharpe_ratio": "tradebook.research.stats",
    "probabilistic_sharpe_ratio": "tradebook.research.stats",
    "expected_max_sharpe": "tradebook.research.stats",
    "deflated_sharpe_ratio": "tradebook.research.stats",
    "deflated_sharpe_ratio_of": "tradebook.research.stats",
    "min_track_record_length": "tradebook.research.stats",
    "probability_of_backtest_overfitting": "tradebook.research.stats",
    "DsrResult": "tradebook.research.stats",
    "PboResult": "tradebook.research.stats",
    "SmaCross": "tradebook.research.examples",
    "MeanReversion": "tradebook.research.examples",
    # the other parts of the research layer (the functions backtest() and sweep() share their modules'
    # names, which an import of the module would rebind here: import them from their modules)
    "CostModel": "tradebook.research.costs",
    "Sizing": "tradebook.research.backtest",
    "BacktestResult": "tradebook.research.backtest",
    "load_backtest": "tradebook.research.backtest",
    "SweepResult": "tradebook.research.sweep",
    "metric_ranges": "tradebook.research.ranges",
    "MetricRanges": "tradebook.research.ranges",
    "daily_records": "tradebook.research.metrics",
    "window_metrics": "tradebook.research.metrics",
    "METRICS": "tradebook.research.metrics",
    "StrategyRunner": "tradebook.research.runner",
    "paper_replay": "tradebook.research.runner",
    "PaperReplayResult": "tradebook.research.runner",
    "quotes_from_daily_bars": "tradebook.research.synthetic",
}

__all__ = sorted(_LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tradebook.research' has no attribute {name!r}")
