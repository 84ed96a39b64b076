"""When a held position is traded toward the wanted one: the one rule the backtest and the paper runner share.

Trading the whole difference between wanted and held at every bar resizes a held position
by a share or two whenever equity moves: on MeanReversion's history about three fills per
round trip, most of them tiny adjustments that pay a spread each. The rule instead:

- when the **target changed** since the last bar acted on (entry, exit, reversal, a new
  strength), trade to the wanted quantity;
- when the target is **unchanged**, re-size only when the held quantity has drifted from
  the wanted one by more than ``band`` of the wanted (25% by default):
  ``|held - wanted| > band x |wanted|``. A position that could not be opened (no open that
  day, or below the minimum size) is still opened at its next chance: from nothing, the
  drift is 100%; and a wanted quantity gone to zero closes the position.

Compiled (numba) so the backtest's order loop calls it per order; plain floats in, so the
session runner (:class:`tradebook.research.runner.StrategyRunner`) calls the very same
function.
"""

from __future__ import annotations

import numba

DEFAULT_BAND = 0.25


@numba.njit(cache=True)
def should_trade(last_target: float, target: float, held: float, wanted: float, band: float) -> bool:
    """Whether to trade from ``held`` to ``wanted`` (see the module docstring; targets in [-1, 1])."""
    if wanted == held:
        return False
    if target != last_target:
        return True
    return abs(held - wanted) > band * abs(wanted)


__all__ = ["DEFAULT_BAND", "should_trade"]
