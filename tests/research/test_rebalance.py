"""The rebalance rule the backtest and the paper runner share: trade on a new target, re-size only past the band."""

from __future__ import annotations

from tradebook.research.rebalance import DEFAULT_BAND, should_trade


def test_a_changed_target_trades_to_the_wanted_quantity():
    assert should_trade(0.0, 1.0, 0.0, 100.0, DEFAULT_BAND)  # entry
    assert should_trade(1.0, 0.0, 100.0, 0.0, DEFAULT_BAND)  # exit
    assert should_trade(1.0, -1.0, 100.0, -100.0, DEFAULT_BAND)  # reversal
    assert should_trade(1.0, 0.5, 100.0, 97.0, DEFAULT_BAND)  # a new strength, however small the order
    assert not should_trade(0.0, 1.0, 100.0, 100.0, DEFAULT_BAND)  # nothing to trade


def test_an_unchanged_target_resizes_only_past_the_band():
    # equity moved: 1-share adjustments of a held position are not traded any more
    assert not should_trade(1.0, 1.0, 100.0, 101.0, DEFAULT_BAND)
    assert not should_trade(1.0, 1.0, 100.0, 80.0, DEFAULT_BAND)  # 20/80 = 25%: on the band, kept
    assert should_trade(1.0, 1.0, 100.0, 79.0, DEFAULT_BAND)
    assert should_trade(-1.0, -1.0, -100.0, -140.0, DEFAULT_BAND)
    # a position that could not be opened is opened at the next chance; a wanted size gone to zero closes
    assert should_trade(1.0, 1.0, 0.0, 100.0, DEFAULT_BAND)
    assert should_trade(1.0, 1.0, 3.0, 0.0, DEFAULT_BAND)
    # band 0: every difference trades (the old behaviour)
    assert should_trade(1.0, 1.0, 100.0, 101.0, 0.0)
