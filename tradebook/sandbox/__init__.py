"""Local protocol servers for the brokers tradebook's adapters talk to: a sandbox without an account.

Each server speaks its broker's wire protocol on 127.0.0.1 (a free port), keeps its own
orders, positions and account, fills by a simple rule driven by ``set_price``, and can be
scripted to misbehave (time out after accepting, drop the connection with a fill in
flight, duplicate a fill, fill after a cancel, reject in bursts, rate-limit, restart with
a new session). Tests drive the real client libraries against them; users may do the same.

Nothing in the core imports this package, and it imports no broker SDK: it speaks the
protocol itself. Import a server from its module, e.g. ``tradebook.sandbox.tws``.
"""
