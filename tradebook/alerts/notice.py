"""What an alert rule says: a notice that a condition opened (or is still open), and its severity."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    INFO = "info"  # worth knowing (an instrument back to normal, a stop that did its job)
    WARNING = "warning"  # look at it today
    CRITICAL = "critical"  # look at it now: money or the books may be wrong


class Source(StrEnum):
    """Who raised a notice; the alert center stores only its own rules' (the others are in the store already)."""

    RULES = "alerts"  # the alert center's rules (stored by the center, deduplicated)
    ORDER_PATH = "oms"  # the order manager's alerts (stored through its journal copy)
    PROMOTION = "promotion"  # a promotion reversion (stored by tradebook.promotion.reversion)


@dataclass(frozen=True)
class AlertNotice:
    """One alert as rules raise it and sinks deliver it.

    ``dedup_key`` names the condition (``slippage:BTCUSDT.BINANCE``): while it stays open,
    the same key raises no new row, its ``repeat_count`` and last time grow. ``subject`` is
    what it is about (an instrument, an order, a venue). Times are int64 UTC ns.
    """

    ts_ns: int
    kind: str
    severity: Severity
    subject: str
    message: str
    dedup_key: str
    source: Source = Source.RULES
    repeat_count: int = 1

    def as_dict(self) -> dict[str, object]:
        """The notice as JSON-ready values (what the webhook posts)."""
        return {"ts_ns": self.ts_ns, "kind": self.kind, "severity": self.severity.value, "subject": self.subject,
                "message": self.message, "dedup_key": self.dedup_key, "source": self.source.value,
                "repeat_count": self.repeat_count}


@dataclass(frozen=True)
class Cleared:
    """A rule's condition closed: the next breach of the same key is a new alert."""

    dedup_key: str
    ts_ns: int
    message: str = ""
