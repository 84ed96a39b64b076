"""A strategy's stage: research -> paper -> live; live -> reverted -> paper.

Every change is a row of ``strategy_stages`` (append-only, with its reason), so the
history of a strategy is a query away. The moves allowed are a table: going live needs
the name of the venue armed for it and a standing PROMOTE decision of the gate (or an
override to promote), so a promoted strategy stays on paper until someone arms a venue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from tradebook.errors import PromotionError


class Stage(StrEnum):
    RESEARCH = "research"
    PAPER = "paper"
    LIVE = "live"
    REVERTED = "reverted"


#: stage now (None: never staged) -> the stages it may move to
TRANSITIONS: dict[Stage | None, frozenset[Stage]] = {
    None: frozenset({Stage.RESEARCH, Stage.PAPER}),
    Stage.RESEARCH: frozenset({Stage.PAPER}),
    Stage.PAPER: frozenset({Stage.LIVE, Stage.RESEARCH}),
    Stage.LIVE: frozenset({Stage.REVERTED}),
    Stage.REVERTED: frozenset({Stage.PAPER}),
}


@dataclass(frozen=True)
class StageChange:
    strategy: str
    ts_ns: int
    stage: Stage
    previous: Stage | None
    backtest_id: str | None
    reason: str


def stage_history(store: Any, strategy: str) -> pd.DataFrame:
    """Every stage change of ``strategy``, oldest first (ts_ns, stage, backtest_id, reason)."""
    return store.query("SELECT strategy, ts_ns, stage, backtest_id, reason FROM strategy_stages "
                       "WHERE strategy = ? ORDER BY ts_ns", [strategy])


def stage(store: Any, strategy: str) -> Stage | None:
    """The stage ``strategy`` is in now (None when it was never staged)."""
    rows = store.query("SELECT stage FROM strategy_stages WHERE strategy = ? ORDER BY ts_ns DESC LIMIT 1",
                       [strategy])
    return None if rows.empty else Stage(rows["stage"].iloc[0])


def _standing_promotion(store: Any, strategy: str) -> bool:
    rows = store.query("SELECT decision FROM promotion_decisions WHERE strategy = ? ORDER BY ts_ns DESC LIMIT 1",
                       [strategy])
    return not rows.empty and rows["decision"].iloc[0] == "promote"


def set_stage(store: Any, strategy: str, new_stage: Stage | str, *, reason: str, backtest_id: str | None = None,
              venue: str | None = None, ts_ns: int | None = None) -> StageChange:
    """Move ``strategy`` to ``new_stage``, recording ``reason`` (required).

    ``live`` needs ``venue`` (the live venue armed for the strategy) and a standing
    PROMOTE decision (the gate's, or an override's). ``ts_ns`` defaults to now; two
    changes in the same nanosecond are kept apart by one nanosecond.
    """
    try:
        target = Stage(new_stage)
    except ValueError:
        raise PromotionError(f"unknown stage {new_stage!r}; expected one of "
                             f"{', '.join(s.value for s in Stage)}") from None
    if not reason or not str(reason).strip():
        raise PromotionError(f"a stage change of {strategy!r} to {target} needs a reason")
    current = stage(store, strategy)
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current]))
        raise PromotionError(f"{strategy!r} is {current or 'not staged'}; it can move to {allowed}, not {target}")
    text = str(reason).strip()
    if target is Stage.LIVE:
        if not venue or not str(venue).strip():
            raise PromotionError(f"{strategy!r} goes live only on a named live venue armed for it; "
                                 "set_stage(..., 'live', venue='...') names none")
        if not _standing_promotion(store, strategy):
            raise PromotionError(f"{strategy!r} has no standing PROMOTE decision; the gate (review) or an "
                                 "override must promote it before it goes live")
        text = f"armed on live venue {venue}: {text}"
    now = time.time_ns() if ts_ns is None else int(ts_ns)
    last = store.query("SELECT max(ts_ns) AS t FROM strategy_stages WHERE strategy = ?", [strategy])["t"].iloc[0]
    if pd.notna(last) and now <= int(last):
        now = int(last) + 1
    with store.transaction() as con:
        con.execute("INSERT INTO strategy_stages (strategy, ts_ns, stage, backtest_id, reason) VALUES (?, ?, ?, ?, ?)",
                    [strategy, now, target.value, backtest_id, text])
    return StageChange(strategy, now, target, current, backtest_id, text)


__all__ = ["Stage", "StageChange", "TRANSITIONS", "set_stage", "stage", "stage_history"]
