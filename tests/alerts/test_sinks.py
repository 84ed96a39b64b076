"""The alert sinks against real local servers: a webhook (HTTP on 127.0.0.1), email (aiosmtpd's SMTP server), and
servers that accept and never answer: the sink gives up after its timeout with a log line, and while it hangs a
session's orders go through."""

from __future__ import annotations

import json
import socket
import threading
from decimal import Decimal
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from tradebook.alerts import AlertCenter, AlertNotice, EmailSink, Severity, WebhookSink, sinks_from_config
from tradebook.config import AlertsConfig, EmailConfig, TradebookConfig, load_config
from tradebook.errors import ConfigError
from tradebook.model.instruments import Side
from tradebook.model.orders import Signal
from tradebook.session import Session
from tradebook.store import Store
from tests.alerts.test_center import BTC, market

SECOND = 1_000_000_000
NOTICE = AlertNotice(1_723_161_600 * SECOND, "slippage", Severity.WARNING, BTC, "BTCUSDT.BINANCE: slipped 12.0 bps",
                     "slippage:BTCUSDT.BINANCE")


class Webhook(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.paths.append(self.path)
                server.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/tradebook"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Mailbox:
    """aiosmtpd's handler interface: keeps each message it is handed."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


class Silent:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word until closed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.connected = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted.append(connection)
            self.connected.set()

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def webhook():
    server = Webhook()
    yield server
    server.stop()


@pytest.fixture
def smtp_server():
    with socket.create_server(("127.0.0.1", 0)) as probe:  # a free port for the controller
        port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.close()


def test_the_webhook_gets_each_new_alert_as_json_once(tmp_path, webhook):
    store = Store(tmp_path / "alerts.duckdb")
    center = AlertCenter(store, AlertsConfig(webhook_url=webhook.url))
    assert [s.name for s in center.sinks] == ["log", f"webhook http://127.0.0.1:{webhook.server_address[1]}"]
    center.notify(NOTICE)
    center.notify(NOTICE)  # the same open condition again: counted in the store, not sent again
    assert center.drain()
    center.close()
    store.close()
    assert webhook.paths == ["/hooks/tradebook"]
    body = webhook.bodies[0]
    assert {k: body[k] for k in ("kind", "severity", "subject", "dedup_key", "repeat_count")} == {
        "kind": "slippage", "severity": "warning", "subject": BTC, "dedup_key": "slippage:BTCUSDT.BINANCE",
        "repeat_count": 1}
    assert body["message"] == NOTICE.message and body["time"].startswith("2024-08-09T00:00:00")


def test_email_goes_to_every_recipient_through_a_local_smtp_server(smtp_server):
    mailbox, port = smtp_server
    config = AlertsConfig(email=EmailConfig(host="127.0.0.1", port=port, from_address="desk@example.org",
                                            to=("ops@example.org", "risk@example.org")))
    email = sinks_from_config(config)[-1]
    assert isinstance(email, EmailSink)
    email.deliver(NOTICE)
    assert (email.sent, email.failures) == (1, 0)
    sender, recipients, content = mailbox.messages[0]
    assert sender == "desk@example.org" and recipients == ["ops@example.org", "risk@example.org"]
    message = message_from_bytes(content)
    assert message["Subject"] == f"[tradebook warning] slippage: {BTC}"
    assert "BTCUSDT.BINANCE: slipped 12.0 bps" in message.get_payload()


@pytest.mark.parametrize("make_sink", [
    lambda port: WebhookSink(f"http://127.0.0.1:{port}/hook", timeout_s=0.3),
    lambda port: EmailSink("127.0.0.1", port, "desk@example.org", ("ops@example.org",), timeout_s=0.3),
], ids=["webhook", "email"])
def test_a_sink_whose_server_never_answers_gives_up_after_its_timeout_with_a_log_line(silent, caplog, make_sink):
    sink = make_sink(silent.port)
    sink.deliver(NOTICE)
    assert silent.connected.is_set() and (sink.sent, sink.failures) == (0, 1)
    assert f"alert sink {sink.name} gave up on alert slippage:BTCUSDT.BINANCE: timed out (timeout 0.3 s)" \
        in caplog.text


def test_orders_go_through_while_the_webhook_hangs(calibrated_btc_store, tmp_path, silent, caplog):
    alerts = AlertsConfig(slippage_bps=0.01, webhook_url=f"http://127.0.0.1:{silent.port}/hook",
                          webhook_timeout_s=60)  # it would hang a minute: the server lets go first
    session = Session(calibrated_btc_store, calibrations=[BTC], state_dir=tmp_path / "state",
                      config=TradebookConfig(alerts=alerts)).start()
    try:
        for batch in market(2, 60000.0, 0):
            session.step(batch)
        first = session.submit(Signal("nb", "s1", BTC, Side.BUY, None, strength=0.95, quantity=Decimal("0.01")))
        session.step(market(1, 60000.0, 2)[0])
        assert silent.connected.wait(30)  # the slippage alert reached the webhook, which now hangs
        more = [session.submit(Signal("nb", f"s{i}", BTC, Side.BUY, None, strength=0.95, quantity=Decimal("0.01")))
                for i in range(2, 5)]
        for batch in market(2, 60000.0, 3):
            session.step(batch)
        statuses = session.orders().set_index("client_order_id")["status"]
        assert [statuses[o[0].client_order_id] for o in [first, *more]] == ["filled"] * 4
        webhook = session.alert_center.sinks[-1]
        assert (webhook.sent, webhook.failures) == (0, 0)  # all four filled while it still waited for an answer
    finally:
        silent.close()  # the sink's request ends; stop() then finds its queue handled
        session.stop()
    assert "alert sink webhook http://127.0.0.1:" in caplog.text


def test_alert_settings_are_checked_and_read_from_the_yaml_file(tmp_path):
    path = tmp_path / "tradebook.yaml"
    path.write_text("""
alerts:
  slippage_bps: 5
  restrict_on_cost: true
  webhook_url: https://hooks.example.org/desk
  email: {host: smtp.example.org, port: 2525, to: [ops@example.org]}
""", encoding="utf-8")
    config = load_config(path, env={})
    assert config.alerts.slippage_bps == 5 and config.alerts.restrict_on_cost
    assert [s.name for s in sinks_from_config(config.alerts)] == ["log", "webhook https://hooks.example.org",
                                                                  "email smtp.example.org:2525"]
    with pytest.raises(ConfigError, match="alerts.email.to is empty"):
        AlertsConfig(email=EmailConfig(host="smtp.example.org"))
    with pytest.raises(ConfigError, match="alerts.webhook_url: a URL with a password"):
        AlertsConfig(webhook_url="https://desk:hunter2@hooks.example.org/x")
    with pytest.raises(ConfigError, match="alerts.cost_normal = 2.5 is not below alerts.cost_vs_model = 2.0"):
        AlertsConfig(cost_normal=2.5)
    with pytest.raises(ConfigError, match="alerts.webhook_url"):
        AlertsConfig(webhook_url="ftp://hooks.example.org")
