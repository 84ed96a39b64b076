"""Versioned schema migrations of the DuckDB store.

Each migration runs in one transaction with the row that records it in
``schema_migrations``, so a store is always at exactly one version. Migrations are
append-only: never edit one that has shipped, add the next.

Times are BIGINT int64 UTC nanoseconds. Market data is DOUBLE (analytics use
float64 and a CSV value read into a double reads back bit-identical). The order and
accounting path uses DECIMAL(38, 12): tick and lot arithmetic must be exact.
Bulk market-data tables carry no index: ``(dataset_id, row_no)`` is unique by
construction and keeps the file order of rows that share a timestamp.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_MONEY = "DECIMAL(38, 12)"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "instruments, datasets, quality findings and market data",
        (
            """
            CREATE TABLE instruments (
                instrument_id VARCHAR PRIMARY KEY,
                symbol VARCHAR NOT NULL,
                venue VARCHAR NOT NULL,
                asset_class VARCHAR NOT NULL,
                currency VARCHAR NOT NULL,
                base_currency VARCHAR,
                tick_size DECIMAL(38, 12) NOT NULL CHECK (tick_size > 0),
                tick_schedule VARCHAR NOT NULL DEFAULT '[]',
                lot_size DECIMAL(38, 12) NOT NULL CHECK (lot_size > 0),
                min_quantity DECIMAL(38, 12) NOT NULL CHECK (min_quantity >= 0),
                min_notional DECIMAL(38, 12) NOT NULL CHECK (min_notional >= 0),
                multiplier DECIMAL(38, 12) NOT NULL CHECK (multiplier > 0),
                trading_hours VARCHAR NOT NULL,
                description VARCHAR NOT NULL DEFAULT ''
            )
            """,
            "CREATE SEQUENCE dataset_id_seq START 1",
            """
            CREATE TABLE datasets (
                dataset_id INTEGER PRIMARY KEY DEFAULT nextval('dataset_id_seq'),
                instrument_id VARCHAR NOT NULL,
                kind VARCHAR NOT NULL,
                source VARCHAR NOT NULL,
                content_hash VARCHAR NOT NULL,
                bar_ns BIGINT,
                row_count BIGINT NOT NULL CHECK (row_count > 0),
                first_ts_ns BIGINT NOT NULL,
                last_ts_ns BIGINT NOT NULL,
                loaded_at_ns BIGINT NOT NULL,
                UNIQUE (instrument_id, kind, content_hash)
            )
            """,
            """
            CREATE TABLE data_quality (
                dataset_id INTEGER NOT NULL,
                severity VARCHAR NOT NULL CHECK (severity IN ('info', 'warning')),
                code VARCHAR NOT NULL,
                message VARCHAR NOT NULL,
                count BIGINT NOT NULL,
                first_line BIGINT
            )
            """,
            """
            CREATE TABLE quotes (
                dataset_id INTEGER NOT NULL, row_no BIGINT NOT NULL, instrument_id VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL, ts_event_ns BIGINT, update_id BIGINT,
                bid_px DOUBLE NOT NULL CHECK (bid_px > 0), bid_sz DOUBLE CHECK (bid_sz >= 0),
                ask_px DOUBLE NOT NULL CHECK (ask_px > 0), ask_sz DOUBLE CHECK (ask_sz >= 0),
                bid_venue VARCHAR, ask_venue VARCHAR
            )
            """,
            """
            CREATE TABLE trades (
                dataset_id INTEGER NOT NULL, row_no BIGINT NOT NULL, instrument_id VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL, ts_event_ns BIGINT, ts_trade_ns BIGINT, trade_id BIGINT, sequence BIGINT,
                price DOUBLE NOT NULL CHECK (price > 0), size DOUBLE NOT NULL CHECK (size >= 0),
                aggressor_side VARCHAR CHECK (aggressor_side IN ('BUY', 'SELL', 'NONE')),
                venue VARCHAR, conditions VARCHAR, flags BIGINT, suspicious BOOLEAN
            )
            """,
            """
            CREATE TABLE trade_bars (
                dataset_id INTEGER NOT NULL, row_no BIGINT NOT NULL, instrument_id VARCHAR NOT NULL,
                bar_ns BIGINT NOT NULL CHECK (bar_ns > 0), ts_ns BIGINT NOT NULL,
                open DOUBLE NOT NULL CHECK (open > 0), high DOUBLE NOT NULL, low DOUBLE NOT NULL CHECK (low > 0),
                close DOUBLE NOT NULL CHECK (close > 0), volume DOUBLE NOT NULL CHECK (volume >= 0),
                CHECK (low <= high)
            )
            """,
            """
            CREATE TABLE quote_bars (
                dataset_id INTEGER NOT NULL, row_no BIGINT NOT NULL, instrument_id VARCHAR NOT NULL,
                bar_ns BIGINT NOT NULL CHECK (bar_ns > 0), ts_ns BIGINT NOT NULL,
                bid_open DOUBLE NOT NULL, bid_high DOUBLE NOT NULL, bid_low DOUBLE NOT NULL CHECK (bid_low > 0),
                bid_close DOUBLE NOT NULL, last_bid_size DOUBLE NOT NULL CHECK (last_bid_size >= 0),
                ask_open DOUBLE NOT NULL, ask_high DOUBLE NOT NULL, ask_low DOUBLE NOT NULL CHECK (ask_low > 0),
                ask_close DOUBLE NOT NULL, last_ask_size DOUBLE NOT NULL CHECK (last_ask_size >= 0)
            )
            """,
            """
            CREATE TABLE adjustment_factors (
                dataset_id INTEGER NOT NULL, row_no BIGINT NOT NULL, instrument_id VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL,
                price_factor DOUBLE NOT NULL CHECK (price_factor > 0),
                split_factor DOUBLE NOT NULL CHECK (split_factor > 0),
                reference_price DOUBLE NOT NULL
            )
            """,
            """
            CREATE TABLE depth_updates (
                dataset_id INTEGER NOT NULL, row_no BIGINT NOT NULL, instrument_id VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL, ts_event_ns BIGINT,
                kind VARCHAR NOT NULL CHECK (kind IN ('snapshot', 'diff')),
                first_update_id BIGINT, last_update_id BIGINT NOT NULL,
                side VARCHAR NOT NULL CHECK (side IN ('bid', 'ask')),
                price DOUBLE NOT NULL CHECK (price > 0), qty DOUBLE NOT NULL CHECK (qty >= 0)
            )
            """,
            """
            CREATE TABLE book_levels (
                dataset_id INTEGER NOT NULL, row_no BIGINT NOT NULL, instrument_id VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL, ts_event_ns BIGINT, level SMALLINT NOT NULL CHECK (level >= 0),
                bid_px DOUBLE CHECK (bid_px > 0), bid_sz DOUBLE CHECK (bid_sz >= 0),
                ask_px DOUBLE CHECK (ask_px > 0), ask_sz DOUBLE CHECK (ask_sz >= 0)
            )
            """,
            """
            CREATE TABLE mbp1_events (
                dataset_id INTEGER NOT NULL, row_no BIGINT NOT NULL, instrument_id VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL, ts_event_ns BIGINT,
                action VARCHAR NOT NULL, side VARCHAR NOT NULL,
                price DOUBLE NOT NULL, size DOUBLE NOT NULL CHECK (size >= 0),
                flags BIGINT, sequence BIGINT,
                bid_px DOUBLE NOT NULL, bid_sz DOUBLE NOT NULL, bid_ct BIGINT,
                ask_px DOUBLE NOT NULL, ask_sz DOUBLE NOT NULL, ask_ct BIGINT
            )
            """,
        ),
    ),
    Migration(
        2,
        "orders, order events, fills, positions and fill-model calibrations",
        (
            f"""
            CREATE TABLE orders (
                client_order_id VARCHAR PRIMARY KEY,
                intent_id VARCHAR NOT NULL,
                strategy_id VARCHAR NOT NULL,
                account_id VARCHAR NOT NULL,
                mode VARCHAR NOT NULL CHECK (mode IN ('paper', 'live')),
                venue VARCHAR NOT NULL,
                instrument_id VARCHAR NOT NULL,
                side VARCHAR NOT NULL CHECK (side IN ('buy', 'sell')),
                order_type VARCHAR NOT NULL,
                time_in_force VARCHAR NOT NULL,
                quantity {_MONEY} NOT NULL CHECK (quantity > 0),
                limit_price {_MONEY},
                stop_price {_MONEY},
                parent_order_id VARCHAR,
                venue_order_id VARCHAR,
                status VARCHAR NOT NULL,
                filled_quantity {_MONEY} NOT NULL DEFAULT 0,
                avg_fill_price {_MONEY},
                ts_init BIGINT NOT NULL,
                ts_last BIGINT NOT NULL,
                tags VARCHAR NOT NULL DEFAULT '{{}}'
            )
            """,
            "CREATE SEQUENCE order_event_seq START 1",
            f"""
            CREATE TABLE order_events (
                event_seq BIGINT PRIMARY KEY DEFAULT nextval('order_event_seq'),
                client_order_id VARCHAR NOT NULL,
                event_type VARCHAR NOT NULL,
                ts_event BIGINT NOT NULL,
                ts_init BIGINT NOT NULL,
                venue_order_id VARCHAR,
                quantity {_MONEY},
                price {_MONEY},
                reason VARCHAR,
                payload VARCHAR NOT NULL DEFAULT '{{}}'
            )
            """,
            f"""
            CREATE TABLE fills (
                fill_id VARCHAR PRIMARY KEY,
                client_order_id VARCHAR NOT NULL,
                venue_order_id VARCHAR,
                account_id VARCHAR NOT NULL,
                strategy_id VARCHAR NOT NULL,
                instrument_id VARCHAR NOT NULL,
                side VARCHAR NOT NULL CHECK (side IN ('buy', 'sell')),
                quantity {_MONEY} NOT NULL CHECK (quantity > 0),
                price {_MONEY} NOT NULL,
                fee {_MONEY} NOT NULL DEFAULT 0,
                fee_currency VARCHAR NOT NULL,
                liquidity VARCHAR NOT NULL CHECK (liquidity IN ('maker', 'taker')),
                ts_event BIGINT NOT NULL,
                ts_init BIGINT NOT NULL
            )
            """,
            f"""
            CREATE TABLE positions (
                account_id VARCHAR NOT NULL,
                strategy_id VARCHAR NOT NULL,
                instrument_id VARCHAR NOT NULL,
                quantity {_MONEY} NOT NULL,
                avg_price {_MONEY},
                realized_pnl {_MONEY} NOT NULL DEFAULT 0,
                ts_last BIGINT NOT NULL,
                PRIMARY KEY (account_id, strategy_id, instrument_id)
            )
            """,
            """
            CREATE TABLE calibrations (
                calibration_id VARCHAR PRIMARY KEY,
                instrument_id VARCHAR NOT NULL,
                version INTEGER NOT NULL CHECK (version > 0),
                created_at_ns BIGINT NOT NULL,
                data_start_ns BIGINT NOT NULL,
                data_end_ns BIGINT NOT NULL,
                dataset_ids VARCHAR NOT NULL,
                params VARCHAR NOT NULL,
                diagnostics VARCHAR NOT NULL,
                UNIQUE (instrument_id, version)
            )
            """,
        ),
    ),
    Migration(
        3,
        "order path: journal offsets, alerts, order reasons and fees",
        (
            # Why an order was rejected, cancelled or expired (risk rejections are orders in
            # status 'rejected' with the check that refused them), and the fees it paid.
            "ALTER TABLE orders ADD COLUMN reason VARCHAR NOT NULL DEFAULT ''",
            f"ALTER TABLE orders ADD COLUMN fees {_MONEY} NOT NULL DEFAULT 0",
            # Where in the write-ahead journal an event came from: the journal is the source
            # of truth and the store a copy, so every copied row says which record it is.
            "ALTER TABLE order_events ADD COLUMN journal_position BIGINT",
            f"ALTER TABLE positions ADD COLUMN fees {_MONEY} NOT NULL DEFAULT 0",
            """
            CREATE TABLE journal_offsets (
                journal VARCHAR PRIMARY KEY,
                position BIGINT NOT NULL CHECK (position >= 0),
                updated_at_ns BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE alerts (
                ts_ns BIGINT NOT NULL,
                kind VARCHAR NOT NULL,
                message VARCHAR NOT NULL,
                source VARCHAR NOT NULL DEFAULT '',
                journal_position BIGINT
            )
            """,
        ),
    ),
    Migration(
        4,
        "research: backtests (every trial of a sweep), their trades, fills, days, equity and 30-day ranges",
        (
            # One row per backtest. A sweep stores every trial (sweep_id set), not only the best,
            # so the deflated Sharpe ratio and PBO see the honest number of trials.
            """
            CREATE TABLE research_sweeps (
                sweep_id VARCHAR PRIMARY KEY,
                strategy VARCHAR NOT NULL,
                grid VARCHAR NOT NULL,
                n_trials INTEGER NOT NULL CHECK (n_trials > 0),
                chosen_backtest_id VARCHAR,
                created_at_ns BIGINT NOT NULL,
                stats VARCHAR NOT NULL
            )
            """,
            """
            CREATE TABLE research_backtests (
                backtest_id VARCHAR PRIMARY KEY,
                strategy VARCHAR NOT NULL,
                sweep_id VARCHAR,
                params VARCHAR NOT NULL,
                instruments VARCHAR NOT NULL,
                bar_seconds BIGINT NOT NULL CHECK (bar_seconds > 0),
                data_start_ns BIGINT NOT NULL,
                data_end_ns BIGINT NOT NULL,
                calibrations VARCHAR NOT NULL,
                fees VARCHAR NOT NULL,
                starting_equity DOUBLE NOT NULL,
                metrics VARCHAR NOT NULL,
                sizing VARCHAR NOT NULL,
                created_at_ns BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE research_trades (
                backtest_id VARCHAR NOT NULL,
                trade_no INTEGER NOT NULL,
                instrument_id VARCHAR NOT NULL,
                direction VARCHAR NOT NULL CHECK (direction IN ('long', 'short')),
                quantity DOUBLE NOT NULL,
                entry_ts_ns BIGINT NOT NULL,
                entry_price DOUBLE NOT NULL,
                exit_ts_ns BIGINT,
                exit_price DOUBLE,
                pnl DOUBLE,
                return_pct DOUBLE,
                fees DOUBLE NOT NULL,
                PRIMARY KEY (backtest_id, trade_no)
            )
            """,
            # Every fill with what it cost against the mid and what the fill model predicted,
            # in bps: the gate's cost check resamples days with their own fills.
            """
            CREATE TABLE research_fills (
                backtest_id VARCHAR NOT NULL,
                fill_no INTEGER NOT NULL,
                instrument_id VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL,
                side VARCHAR NOT NULL CHECK (side IN ('buy', 'sell')),
                quantity DOUBLE NOT NULL,
                price DOUBLE NOT NULL,
                mid DOUBLE NOT NULL,
                fee DOUBLE NOT NULL,
                cost_bps DOUBLE NOT NULL,
                predicted_cost_bps DOUBLE NOT NULL,
                PRIMARY KEY (backtest_id, fill_no)
            )
            """,
            """
            CREATE TABLE research_equity (
                backtest_id VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL,
                equity DOUBLE NOT NULL,
                PRIMARY KEY (backtest_id, ts_ns)
            )
            """,
            """
            CREATE TABLE research_ranges (
                backtest_id VARCHAR NOT NULL,
                method VARCHAR NOT NULL,
                window_days INTEGER NOT NULL CHECK (window_days > 0),
                metric VARCHAR NOT NULL,
                p05 DOUBLE, p25 DOUBLE, p50 DOUBLE, p75 DOUBLE, p95 DOUBLE,
                n_windows INTEGER NOT NULL,
                PRIMARY KEY (backtest_id, method, window_days, metric)
            )
            """,
        ),
    ),
    Migration(
        5,
        "promotion: strategy stages, gate decisions with their evidence, overrides",
        (
            """
            CREATE TABLE strategy_stages (
                strategy VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL,
                stage VARCHAR NOT NULL CHECK (stage IN ('research', 'paper', 'live', 'reverted')),
                backtest_id VARCHAR,
                reason VARCHAR NOT NULL,
                PRIMARY KEY (strategy, ts_ns)
            )
            """,
            """
            CREATE TABLE promotion_decisions (
                decision_id VARCHAR PRIMARY KEY,
                strategy VARCHAR NOT NULL,
                ts_ns BIGINT NOT NULL,
                backtest_id VARCHAR NOT NULL,
                period_start_ns BIGINT NOT NULL,
                period_end_ns BIGINT NOT NULL,
                decision VARCHAR NOT NULL CHECK (decision IN ('extend', 'promote', 'reject', 'revert')),
                codes VARCHAR NOT NULL,
                summary VARCHAR NOT NULL,
                evidence VARCHAR NOT NULL,
                override BOOLEAN NOT NULL DEFAULT FALSE,
                override_reason VARCHAR
            )
            """,
        ),
    ),
    Migration(
        6,
        "execution quality: TCA per fill and per order, alert state, fill-model feedback provenance",
        (
            # One row per fill. Every *_bps column is signed so that positive is a cost to us; NULL
            # where the quote it needs is not in the store (a markout horizon past the data's end).
            f"""
            CREATE TABLE tca_fills (
                fill_id VARCHAR PRIMARY KEY,
                client_order_id VARCHAR NOT NULL,
                parent_order_id VARCHAR,
                account_id VARCHAR NOT NULL,
                strategy_id VARCHAR NOT NULL,
                instrument_id VARCHAR NOT NULL,
                mode VARCHAR NOT NULL,
                venue VARCHAR NOT NULL,
                side VARCHAR NOT NULL CHECK (side IN ('buy', 'sell')),
                quantity {_MONEY} NOT NULL,
                price DOUBLE NOT NULL,
                liquidity VARCHAR NOT NULL,
                ts_event BIGINT NOT NULL,
                decision_ts_ns BIGINT,
                decision_price DOUBLE,
                arrival_ts_ns BIGINT,
                arrival_mid DOUBLE,
                mid_at_fill DOUBLE,
                touch_at_fill DOUBLE,
                delay_bps DOUBLE,
                spread_bps DOUBLE,
                execution_bps DOUBLE,
                fee_bps DOUBLE,
                shortfall_bps DOUBLE,
                arrival_slippage_bps DOUBLE,
                markout_1s_bps DOUBLE,
                markout_10s_bps DOUBLE,
                markout_60s_bps DOUBLE,
                predicted_cost_bps DOUBLE,
                realised_cost_bps DOUBLE,
                calibration_id VARCHAR,
                computed_at_ns BIGINT NOT NULL
            )
            """,
            # One row per order and one per algo parent (level 'order' or 'parent'): the whole
            # ordered quantity, so what did not fill is an opportunity cost, not left out.
            f"""
            CREATE TABLE tca_orders (
                order_id VARCHAR NOT NULL,
                level VARCHAR NOT NULL CHECK (level IN ('order', 'parent')),
                account_id VARCHAR NOT NULL,
                strategy_id VARCHAR NOT NULL,
                instrument_id VARCHAR NOT NULL,
                mode VARCHAR NOT NULL,
                side VARCHAR NOT NULL CHECK (side IN ('buy', 'sell')),
                order_type VARCHAR NOT NULL,
                ordered_quantity {_MONEY} NOT NULL,
                filled_quantity {_MONEY} NOT NULL,
                fill_rate DOUBLE NOT NULL,
                avg_fill_price DOUBLE,
                limit_price DOUBLE,
                decision_ts_ns BIGINT,
                decision_price DOUBLE,
                arrival_mid DOUBLE,
                end_ts_ns BIGINT,
                end_mid DOUBLE,
                delay_bps DOUBLE,
                spread_bps DOUBLE,
                execution_bps DOUBLE,
                fee_bps DOUBLE,
                opportunity_bps DOUBLE,
                shortfall_bps DOUBLE,
                limit_slippage_bps DOUBLE,
                arrival_slippage_bps DOUBLE,
                market_vwap DOUBLE,
                vwap_slippage_bps DOUBLE,
                market_volume DOUBLE,
                participation DOUBLE,
                signal_to_submit_ms DOUBLE,
                submit_to_ack_ms DOUBLE,
                ack_to_first_fill_ms DOUBLE,
                first_to_last_fill_ms DOUBLE,
                status VARCHAR NOT NULL,
                computed_at_ns BIGINT NOT NULL,
                PRIMARY KEY (order_id, level)
            )
            """,
            # Alerts become rules' output: deduplicated by key (one row per open condition, its
            # count and last time growing), with a severity and what they are about.
            "ALTER TABLE alerts ADD COLUMN severity VARCHAR NOT NULL DEFAULT 'warning'",
            "ALTER TABLE alerts ADD COLUMN dedup_key VARCHAR NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN subject VARCHAR NOT NULL DEFAULT ''",
            "ALTER TABLE alerts ADD COLUMN repeat_count INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE alerts ADD COLUMN last_ts_ns BIGINT",
            # A calibration made from realised fills says which calibration it corrected and with
            # how many fills ('' for one fitted from market data alone).
            "ALTER TABLE calibrations ADD COLUMN provenance VARCHAR NOT NULL DEFAULT ''",
        ),
    ),
    Migration(
        7,
        "execution quality: the decision price of each order and algo parent, and the signal type of TCA rows",
        (
            # What the session decided with: the mid of the reference quote it priced the order (or the
            # algo parent, with its whole quantity) against, and when. Live sessions may store no
            # quotes, so this is the only record of the decision price; TCA falls back to the stored
            # quotes' mid at the order's creation where a row is missing.
            f"""
            CREATE TABLE tca_decisions (
                order_id VARCHAR NOT NULL,
                level VARCHAR NOT NULL CHECK (level IN ('order', 'parent')),
                account_id VARCHAR NOT NULL,
                strategy_id VARCHAR NOT NULL,
                instrument_id VARCHAR NOT NULL,
                side VARCHAR NOT NULL CHECK (side IN ('buy', 'sell')),
                quantity {_MONEY} NOT NULL,
                order_type VARCHAR NOT NULL,
                signal_ts_ns BIGINT,
                decision_ts_ns BIGINT NOT NULL,
                decision_price DOUBLE,
                PRIMARY KEY (order_id, level)
            )
            """,
            "ALTER TABLE tca_fills ADD COLUMN signal_type VARCHAR NOT NULL DEFAULT ''",
            "ALTER TABLE tca_orders ADD COLUMN signal_type VARCHAR NOT NULL DEFAULT ''",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


@functools.cache
def schema_columns(table: str) -> tuple[str, ...]:
    """Columns of ``table`` as the migrations leave it, in order (empty for no such table): for an empty frame
    while a store cannot be opened, and to check a requested column list without a store."""
    import duckdb  # the store's own dependency; imported here so the schema module stays declarative

    con = duckdb.connect()
    try:
        for migration in MIGRATIONS:
            for statement in migration.statements:
                con.execute(statement)
        rows = con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                           "ORDER BY ordinal_position", [table]).fetchall()
        return tuple(r[0] for r in rows)
    finally:
        con.close()
