"""tune_gc: rarer collections while sessions run, the previous settings back after the last one."""

from __future__ import annotations

import gc

import pytest

from tradebook.errors import ConfigError
from tradebook.runtime import TRADING_GC_THRESHOLDS, tune_gc


def test_thresholds_are_raised_and_restored_after_the_last_of_nested_sessions():
    before = gc.get_threshold()
    first = tune_gc()
    try:
        assert gc.get_threshold() == TRADING_GC_THRESHOLDS and gc.get_freeze_count() > 0
        second = tune_gc()
        second()
        second()  # restoring twice is harmless
        assert gc.get_threshold() == TRADING_GC_THRESHOLDS  # the first session still runs
    finally:
        first()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.mark.parametrize("bad", [(0, 10, 10), (700, 10), (700.0, 10, 10), (True, 10, 10)])
def test_bad_thresholds_are_refused(bad):
    before = gc.get_threshold()
    with pytest.raises(ConfigError, match="three positive ints"):
        tune_gc(bad)
    assert gc.get_threshold() == before
