"""``python -m tradebook.sandbox.tws``: a TWS sandbox served from the command line until Ctrl-C."""

from __future__ import annotations

import time

from tradebook.sandbox.tws import SERVER_VERSION, TwsServer


def main(argv: list[str] | None = None) -> int:
    """``python -m tradebook.sandbox.tws [--port N] [--price SYMBOL=BID/ASK ...]``: serve until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tradebook.sandbox.tws", description="A local TWS API on "
                                     "127.0.0.1 (tradebook's sandbox) for ib-async; Ctrl-C stops it.")
    parser.add_argument("--port", type=int, default=7497, help="port to listen on (default: 7497, TWS paper's; "
                        "0 for a free one)")
    parser.add_argument("--price", action="append", default=[], metavar="SYMBOL=BID/ASK",
                        help="a starting touch, e.g. AAPL=189.99/190.01 or ESH7=5000.00/5000.25 (repeatable)")
    args = parser.parse_args(argv)
    quotes = []
    for text in args.price:
        symbol, _, quote = text.partition("=")
        bid, _, ask = quote.partition("/")
        if not (symbol and bid and ask):
            parser.error(f"--price {text!r}: expected SYMBOL=BID/ASK, e.g. AAPL=189.99/190.01")
        quotes.append((symbol, bid, ask))
    with TwsServer(port=args.port) as tws:
        for symbol, bid, ask in quotes:
            tws.set_price(symbol, bid, ask)
        print(f"TWS sandbox listening on {tws.host}:{tws.port} (account {tws.account}, server version "
              f"{SERVER_VERSION})", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            return 0

