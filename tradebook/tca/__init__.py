"""Transaction cost analysis: what execution really cost, per fill and per order, stored in DuckDB.

- :func:`update_tca` writes ``tca_fills`` and ``tca_orders`` (orders and algo parents)
  incrementally, in the process that holds the store's writer; a running session calls it
  after its store flushes and when it stops. Its module docstring states every convention
  (decision price, the delay/spread/execution split, signs, markouts).
- :class:`TcaRecorder`: the decision prices a session notes as it decides; :class:`TcaUpdater`
  runs the update for a running session (after flushes, off its order path, and at its end).
- Reads (a Store or a DuckDB connection/cursor, keyword filters): :func:`tca_fills`,
  :func:`tca_orders`, :func:`cost_by_instrument`, :func:`cost_by_time_of_day`,
  :func:`modelled_vs_realised`, :func:`markouts`, :func:`latency`,
  :func:`strategy_attribution`, :func:`session_performance`.
- :func:`cost_against_mid`: a fill's cost against the mid in force, the one rule reports share.
"""

from __future__ import annotations

from tradebook.tca.mids import cost_against_mid, mids_for_fills, quote_mids
from tradebook.tca.performance import session_performance
from tradebook.tca.reads import (
    cost_by_instrument,
    cost_by_time_of_day,
    latency,
    markouts,
    modelled_vs_realised,
    strategy_attribution,
    tca_fills,
    tca_orders,
)
from tradebook.tca.recorder import DecisionNote, TcaRecorder
from tradebook.tca.update import MARKOUT_HORIZONS_S, TcaUpdate, update_tca
from tradebook.tca.updater import TcaUpdater, calibration_ids

__all__ = [
    "MARKOUT_HORIZONS_S", "DecisionNote", "TcaRecorder", "TcaUpdate", "TcaUpdater", "calibration_ids",
    "cost_against_mid", "cost_by_instrument",
    "cost_by_time_of_day", "latency", "markouts", "mids_for_fills", "modelled_vs_realised", "quote_mids",
    "session_performance", "strategy_attribution", "tca_fills", "tca_orders", "update_tca",
]
