"""Where alerts go besides the store: the log, a webhook (HTTP POST of JSON) and email (SMTP).

A sink's :meth:`deliver` may block (a server that accepts and never answers): the alert
center runs each sink on a thread of its own with a bounded queue (an
:class:`~tradebook.execution.bus.EventBus` subscription), so a slow sink delays nothing but
its own later alerts. Every network call has a timeout; a failure is logged in one line
naming the sink and why, counted in ``failures``, and the next alert is tried afresh.
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from typing import Protocol

from tradebook.alerts.notice import AlertNotice, Severity
from tradebook.config import AlertsConfig
from tradebook.model.time import ns_to_iso

log = logging.getLogger(__name__)

_LOG_LEVELS = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING, Severity.CRITICAL: logging.ERROR}


class AlertSink(Protocol):
    """Delivers one alert; may block; must not raise (log and count instead)."""

    name: str

    def deliver(self, notice: AlertNotice) -> None: ...


class LogSink:
    """The ``tradebook.alerts`` log, at a level from the alert's severity."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log
        self.sent = 0
        self.failures = 0

    def deliver(self, notice: AlertNotice) -> None:
        self.logger.log(_LOG_LEVELS[notice.severity], "alert %s [%s] %s", notice.kind, notice.severity, notice.message)
        self.sent += 1


class WebhookSink:
    """POST each alert as JSON (:meth:`AlertNotice.as_dict` plus ``time``) to ``url``, within ``timeout_s``."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        parts = urllib.parse.urlsplit(url)
        # scheme, host and port only: a webhook's path often holds its secret
        self.name = f"webhook {parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")
        self.sent = 0
        self.failures = 0

    def deliver(self, notice: AlertNotice) -> None:
        body = json.dumps({**notice.as_dict(), "time": ns_to_iso(notice.ts_ns)}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "tradebook-alerts"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except (OSError, urllib.error.URLError) as exc:  # timeouts, refusals, HTTP errors (HTTPError is one)
            self.failures += 1
            log.warning("alert sink %s gave up on alert %s: %s (timeout %g s)", self.name, notice.dedup_key,
                        _why(exc), self.timeout_s)
            return
        self.sent += 1


class EmailSink:
    """Send each alert as a plain-text email through the SMTP server at ``host:port`` (no authentication)."""

    def __init__(self, host: str, port: int, from_address: str, to: tuple[str, ...], timeout_s: float = 10.0) -> None:
        self.host, self.port, self.from_address, self.to, self.timeout_s = host, port, from_address, to, timeout_s
        self.name = f"email {host}:{port}"
        self.sent = 0
        self.failures = 0

    def deliver(self, notice: AlertNotice) -> None:
        message = EmailMessage()
        message["From"] = self.from_address
        message["To"] = ", ".join(self.to)
        message["Subject"] = f"[tradebook {notice.severity}] {notice.kind}: {notice.subject}"
        message.set_content(f"{notice.message}\n\ntime: {ns_to_iso(notice.ts_ns)}\nkind: {notice.kind}\n"
                            f"severity: {notice.severity}\nsubject: {notice.subject}\nkey: {notice.dedup_key}\n")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            self.failures += 1
            log.warning("alert sink %s gave up on alert %s: %s (timeout %g s)", self.name, notice.dedup_key,
                        _why(exc), self.timeout_s)
            return
        self.sent += 1


def sinks_from_config(config: AlertsConfig) -> list[AlertSink]:
    """The log, then the webhook and the email sink where the configuration names them."""
    sinks: list[AlertSink] = [LogSink()]
    if config.webhook_url is not None:
        sinks.append(WebhookSink(config.webhook_url, config.webhook_timeout_s))
    if config.email.host is not None:
        email = config.email
        sinks.append(EmailSink(email.host, email.port, email.from_address, email.to, email.timeout_s))
    return sinks


def _why(exc: BaseException) -> str:
    """'timed out' when a timeout is behind ``exc`` (urllib keeps it as the reason, smtplib as the context)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError) or isinstance(getattr(seen, "reason", None), TimeoutError):
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    return f"{type(exc).__name__}: {exc}"
