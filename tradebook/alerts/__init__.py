"""Alerts: rules over a session's events and TCA rows, stored deduplicated, delivered to the log, webhook, email.

``AlertCenter`` runs the rules (:mod:`tradebook.alerts.rules`) on a session's bus;
``recent_alerts(store_or_con, limit)`` is what the dashboard and the read API show.
Thresholds and sinks come from the ``alerts:`` section of ``tradebook.yaml``
(:class:`tradebook.config.AlertsConfig`).
"""

from tradebook.alerts.center import AlertCenter
from tradebook.alerts.notice import AlertNotice, Cleared, Severity, Source
from tradebook.alerts.sinks import AlertSink, EmailSink, LogSink, WebhookSink, sinks_from_config
from tradebook.alerts.storage import recent_alerts

__all__ = ["AlertCenter", "AlertNotice", "AlertSink", "Cleared", "EmailSink", "LogSink", "Severity", "Source",
           "WebhookSink", "recent_alerts", "sinks_from_config"]
