"""Fixtures of the gate's tests: a simulated backtest's daily records and the gate calibrated on them."""

from __future__ import annotations

import pandas as pd
import pytest

from .simulated import simulated_daily
from tradebook.promotion.gate import calibrate_gate


@pytest.fixture(scope="session")
def backtest_daily() -> pd.DataFrame:
    """Three years of a simulated strategy's daily records (about 6 fills and 0.8 closed trades a day)."""
    return simulated_daily(756, seed=11)


@pytest.fixture(scope="session")
def thresholds(backtest_daily):
    return calibrate_gate(backtest_daily, n_paths=2000, seed=0)
