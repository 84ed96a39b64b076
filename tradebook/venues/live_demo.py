"""Waiting, from a notebook cell, for a broker's answers to orders sent by hand.

A live venue answers from its stream or poller thread while the cell that sent the order
has already returned; :func:`wait_for_orders` blocks the cell until each named order has
reached one of the wanted statuses, with a timeout (never for ever). Used by
``notebooks/05_live.ipynb``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tradebook.errors import ConfigError, SessionTimeoutError
from tradebook.model.orders import Order, OrderStatus

if TYPE_CHECKING:
    from tradebook.execution.oms import OrderManager

POLL_S = 0.02
DEFAULT_TIMEOUT_S = 10.0


def wait_for_orders(oms: OrderManager, client_order_ids: Iterable[str] | str,
                    statuses: Iterable[OrderStatus | str] | OrderStatus | str = (OrderStatus.FILLED,), *,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Order]:
    """Each named order once its status is one of ``statuses``, in the order named.

    ``oms``: the order manager that sent them (``session.oms``). Raises
    :class:`SessionTimeoutError` naming every order not there yet and its status when
    ``timeout_s`` runs out; an order the manager does not hold raises at once.
    """
    ids = [client_order_ids] if isinstance(client_order_ids, str) else list(client_order_ids)
    wanted = {OrderStatus(statuses)} if isinstance(statuses, str) else {OrderStatus(s) for s in statuses}
    if not ids or not wanted:
        raise ConfigError(f"wait_for_orders needs client order ids and statuses; got {ids!r} and {sorted(wanted)!r}")
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s is {timeout_s!r}; expected seconds > 0")
    deadline = time.monotonic() + timeout_s
    while True:
        orders = [oms.order(i) for i in ids]  # an unknown id raises here: nothing to wait for
        late = [o for o in orders if o.status not in wanted]
        if not late:
            return orders
        if time.monotonic() >= deadline:
            shown = ", ".join(f"{o.client_order_id} {o.status}" for o in late)
            raise SessionTimeoutError(f"after {timeout_s:g} s these orders are not yet "
                                      f"{' or '.join(sorted(wanted))}: {shown}")
        time.sleep(POLL_S)
