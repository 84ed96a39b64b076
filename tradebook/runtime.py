"""Process settings for a long-running order path.

CPython's cyclic garbage collector runs a young collection every 700 net allocations
and, every so often, walks every object alive. An order path allocates a few dozen
objects per order and keeps many of them (orders, fills, positions), so with the
defaults a replay of 50,000 orders spends about a tenth of its time in the collector,
and the full walks grow with the session (measured: 7,983 -> 9,080 orders/s with the
thresholds below on ``bench/order_path.py``'s replay). :func:`tune_gc` moves everything
alive at the start (the loaded data, models, modules) out of the collector's reach and
makes collections rarer; the object graph of the order path has few cycles, so little
garbage waits longer for it. The previous settings come back with the returned callable.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

from tradebook.errors import ConfigError

TRADING_GC_THRESHOLDS = (50_000, 50, 1_000)  # young, middle, old: collections about 70x rarer than the default

_lock = threading.Lock()
_active = 0  # tune_gc calls not yet restored (sessions running in this process)
_saved: tuple[int, int, int] | None = None


def tune_gc(thresholds: tuple[int, int, int] = TRADING_GC_THRESHOLDS) -> Callable[[], None]:
    """Freeze what is alive now and raise the collector's thresholds; returns the function that restores them.

    Nested calls (two sessions in one kernel) share one setting: the last restore
    brings back what was there before the first call.
    """
    if len(thresholds) != 3 or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in thresholds):
        raise ConfigError(f"gc thresholds must be three positive ints, got {thresholds!r}")
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(*thresholds)
        _active += 1
    restored = False

    def restore() -> None:
        nonlocal restored
        global _active, _saved
        with _lock:
            if restored:
                return
            restored = True
            _active -= 1
            if _active == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                gc.unfreeze()  # frozen objects go back to the oldest generation: collectable again
                _saved = None

    return restore
