"""Paper runs as a notebook uses them: named, resumed, reset, refused while held, and never hung.

Real stores (the bundled BTCUSDT capture, calibrated), real replays, real journals; a
second process is a real interpreter. The one fault injected from outside is a full
disk under the paper venue's journal: its file descriptor is pointed at /dev/full, the
device that answers every write with ENOSPC, as a filled filesystem would.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import tradebook as tb
from tradebook.data import load_bundled
from tradebook.data.feeds import ReplayFeed
from tradebook.errors import ConfigError, SessionError, SessionLockedError, SessionTimeoutError
from tradebook.paper import LOCK_NAME, clean_flush_leftovers
from tradebook.session import Session, SessionState
from tradebook.store import Store

BTC = "BTCUSDT.BINANCE"
FILES = "binance_spot_btcusdt_20240808T2354-20240809T0005_"
AT_2356 = tb.to_ns("2024-08-08T23:56:00Z")
AT_0000 = tb.to_ns("2024-08-09T00:00:00Z")


@pytest.fixture(scope="module")
def frames():
    return load_bundled(FILES + "l1_quotes.csv.gz"), load_bundled(FILES + "trades.csv.gz")


@pytest.fixture(scope="module")
def template(calibrated_btc_template) -> Path:
    return calibrated_btc_template


@pytest.fixture
def store(template, tmp_path):
    shutil.copy(template, tmp_path / "store.duckdb")
    s = Store(tmp_path / "store.duckdb")
    yield s
    s.close()


@pytest.fixture
def sessions():
    """Sessions a test builds; stopped at the end even when the test fails."""
    built: list[Session] = []
    yield built
    for session in built:
        try:
            session.stop()
        except tb.TradebookError:
            pass


def feed(frames, speed: float | None = None) -> ReplayFeed:
    quotes, trades = frames
    return ReplayFeed({BTC: quotes.frame}, {BTC: trades.frame}, speed=speed)


def session_for(store, frames, sessions, run: str | None = "nb", speed: float | None = None, **kwargs) -> Session:
    kwargs.setdefault("calibrations", [BTC])
    session = Session(store, feed=feed(frames, speed), run=run, **kwargs)
    sessions.append(session)
    return session


def buy(session: Session, signal_id: str = "sig-1") -> list:
    signal = tb.Signal("demo", signal_id, BTC, tb.Side.BUY, ts_ns=session.now_ns, strength=0.95,
                       win_rate=0.55, avg_win=0.012, avg_loss=0.008)
    return session.submit(signal)


def rows(store, sql: str, params=None) -> int:
    return int(store.query(sql, params)["n"].iloc[0])


def account_rows(store, run: str) -> dict[str, int]:
    return {table: rows(store, f"SELECT count(*) AS n FROM {table} WHERE account_id = ?", [run])
            for table in ("orders", "fills", "positions")}


# -- where a run lives -----------------------------------------------------------------------
def test_a_run_is_a_state_folder_next_to_the_store_and_an_account(store, frames, sessions):
    named = session_for(store, frames, sessions, run="ma-cross")
    assert named.state_dir == Path(f"{store.path}.runs/ma-cross") and named.account_id == "ma-cross"
    named.stop()
    default = session_for(store, frames, sessions, run=None)
    assert default.run == "default" and default.state_dir == Path(f"{store.path}.runs/default")
    assert default.account_id == "default"
    default.stop()
    explicit = Session(store, calibrations=[BTC], state_dir=store.path.parent / "elsewhere")
    sessions.append(explicit)
    assert explicit.run is None and explicit.account_id == "paper"  # config.session.account_id
    for bad in ("", "../up", "a/b", ".hidden", "x" * 101, 7):
        with pytest.raises(ConfigError, match="run name"):
            Session(store, calibrations=[BTC], run=bad)
    with pytest.raises(ConfigError, match="reset=True resets a named paper run"):
        Session(store, calibrations=[BTC], state_dir=store.path.parent / "other", reset=True)


# -- one session per state folder --------------------------------------------------------------
def test_the_session_cell_run_twice_is_refused_and_the_first_session_loses_nothing(store, frames, sessions):
    first = session_for(store, frames, sessions, speed=None).start()
    first.wait_until(AT_2356, pause=True)
    orders = buy(first)
    started = time.monotonic()
    with pytest.raises(SessionLockedError) as refused:
        session_for(store, frames, sessions).start()  # the cell executed again
    assert time.monotonic() - started < 2
    message = str(refused.value)
    assert "\n" not in message and f"pid {os.getpid()}" in message and "run 'nb'" in message
    assert "stop that session first" in message
    # the first goes on: it trades, finishes, and the store holds everything it did
    assert first.state is SessionState.PAUSED
    buy(first, "sig-2")
    first.resume()
    assert first.wait(timeout=60) is SessionState.FINISHED
    coids = sorted(first.orders()["client_order_id"])
    assert len(coids) == 2 and orders[0].client_order_id in coids
    assert sorted(store.query("SELECT client_order_id FROM orders")["client_order_id"]) == coids
    assert rows(store, "SELECT count(*) AS n FROM fills") == len(first.fills()) > 0
    # released when it ended: the same run can be opened again at once (and its replay is over)
    again = session_for(store, frames, sessions)
    with pytest.raises(SessionError, match="already replayed this feed"):
        again.start()


def test_a_second_process_is_refused_naming_the_holder_and_gets_the_folder_when_it_ends(store, frames, sessions,
                                                                                      run_python):
    holder = session_for(store, frames, sessions, run="shared")
    code = textwrap.dedent(f"""
        import sys
        from tradebook.paper import StateLock
        try:
            StateLock({str(holder.state_dir)!r}, "shared")
        except Exception as exc:
            print(type(exc).__name__, exc)
            sys.exit(3)
        print("acquired")
    """)
    refused = run_python(code)
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout.startswith("SessionLockedError state folder")
    assert f"pid {os.getpid()} on" in refused.stdout and "run 'shared'" in refused.stdout
    holder.stop()  # never started: stop() lets go of the folder
    assert run_python(code).stdout.strip() == "acquired"


def test_a_session_in_a_second_process_on_the_same_run_is_refused_at_construction(store, frames, sessions,
                                                                                  run_python):
    store.close()
    shared = tb.open_store(store.path)  # a notebook's store: read-only until it writes, so both processes read it
    try:
        holder = Session(shared, calibrations=[BTC], run="shared")
        sessions.append(holder)
        code = textwrap.dedent(f"""
            import tradebook as tb
            store = tb.open_store({str(store.path)!r})
            try:
                tb.Session(store, calibrations=["{BTC}"], run="shared")
            except tb.TradebookError as exc:
                print(type(exc).__name__, exc)
            else:
                print("built")
        """)
        refused = run_python(code)
        assert refused.stdout.startswith("SessionLockedError state folder"), refused.stdout + refused.stderr
        assert f"pid {os.getpid()} on" in refused.stdout and "run 'shared'" in refused.stdout
        holder.stop()
        assert run_python(code).stdout.strip() == "built"
    finally:
        shared.close()


def test_a_killed_holder_releases_its_folder(store, tmp_path, run_python):
    state = Path(f"{store.path}.runs/killed")
    code = textwrap.dedent(f"""
        import os
        from tradebook.paper import StateLock
        lock = StateLock({str(state)!r}, "killed")
        print("held", flush=True)
        os.kill(os.getpid(), 9)
    """)
    result = run_python(code)
    assert result.stdout.strip() == "held" and result.returncode == -9
    assert (state / LOCK_NAME).exists() and not tb.paper.is_locked(state)
    tb.paper.StateLock(state, "killed").release()


# -- resume, finished, kill switch ----------------------------------------------------------------
def test_a_run_resumes_and_a_finished_replay_says_what_to_do_without_locking_the_folder(store, frames, sessions):
    first = session_for(store, frames, sessions, speed=None).start()
    first.wait_until(AT_2356, pause=True)
    first.stop()
    resumed = session_for(store, frames, sessions).start()
    assert resumed.now_ns >= AT_2356
    assert resumed.wait(timeout=60) is SessionState.FINISHED
    with pytest.raises(SessionError, match="nothing left to replay") as info:
        session_for(store, frames, sessions).start()
    message = str(info.value)
    assert "\n" not in message and "reset=True" in message and "tb.paper.new_run()" in message
    assert not tb.paper.is_locked(resumed.state_dir)
    listed = tb.paper.runs(store).set_index("run").loc["nb"]
    assert bool(listed["finished"]) and not bool(listed["in_use"])


def test_a_kill_switch_carried_over_is_shown_at_start_and_in_status(store, frames, sessions):
    first = session_for(store, frames, sessions, speed=None).start()
    first.wait_until(AT_2356, pause=True)
    first.halt("news pending")
    first.stop()
    with pytest.warns(UserWarning, match=r"starts with its kill switch halted \(carried over .*news pending"):
        second = session_for(store, frames, sessions).start()
    status = second.status()
    assert status["kill_switch"] == "halted" and status["kill_switch_reason"] == "news pending"
    assert status["run"] == "nb"
    second.stop()
    assert tb.paper.runs(store).set_index("run").loc["nb", "kill_switch"] == "halted"


# -- reset and start fresh ----------------------------------------------------------------------------
def test_reset_removes_the_runs_rows_and_state_so_the_same_signal_trades_again(store, frames, sessions):
    other = session_for(store, frames, sessions, run="other", speed=None).start()
    other.wait_until(AT_2356, pause=True)
    buy(other, "other-1")
    other.stop()
    kept = account_rows(store, "other")

    first = session_for(store, frames, sessions, speed=None).start()
    first.wait_until(AT_2356, pause=True)
    coid = buy(first)[0].client_order_id
    first.resume()
    first.wait(timeout=60)
    assert account_rows(store, "nb")["orders"] == 1 and account_rows(store, "nb")["fills"] >= 1
    journal = first.oms_journal_name
    assert rows(store, "SELECT count(*) AS n FROM journal_offsets WHERE journal = ?", [journal]) == 1

    held = session_for(store, frames, sessions)
    with pytest.raises(SessionLockedError, match="in use by the session of pid"):
        tb.paper.reset(store, "nb")
    held.stop()
    removed = tb.paper.reset(store, "nb")
    assert removed["orders"] == 1 and removed["journal_offsets"] == 1
    assert account_rows(store, "nb") == {"orders": 0, "fills": 0, "positions": 0}
    assert rows(store, "SELECT count(*) AS n FROM order_events WHERE client_order_id = ?", [coid]) == 0
    assert rows(store, "SELECT count(*) AS n FROM journal_offsets WHERE journal = ?", [journal]) == 0
    assert [p.name for p in first.state_dir.iterdir()] == [LOCK_NAME]
    assert account_rows(store, "other") == kept  # another run is untouched

    # the same signal id trades again, once, in the run started over
    again = session_for(store, frames, sessions, speed=None).start()
    again.wait_until(AT_2356, pause=True)
    assert buy(again)[0].client_order_id == coid
    assert buy(again)[0].client_order_id == coid  # a re-run cell: nothing new
    again.stop()
    assert account_rows(store, "nb")["orders"] == 1


def test_reset_on_the_session_and_at_construction(store, frames, sessions):
    first = session_for(store, frames, sessions, speed=None).start()
    first.wait_until(AT_2356, pause=True)
    buy(first)
    with pytest.raises(SessionError, match="stop\\(\\) it before reset"):
        first.reset()
    first.stop()
    assert first.reset()["orders"] == 1
    assert account_rows(store, "nb")["orders"] == 0
    with pytest.raises(SessionError, match="already started or ended"):
        first.start()

    second = session_for(store, frames, sessions, speed=None).start()
    second.wait_until(AT_2356, pause=True)
    buy(second)
    second.halt("end of demo")
    second.stop()
    third = session_for(store, frames, sessions, speed=None, reset=True)
    assert third.kill_switch.mode == "normal" and third._resume_ns is None
    assert account_rows(store, "nb")["orders"] == 0
    third.start()
    third.wait_until(AT_2356, pause=True)
    assert len(buy(third)) == 1
    third.stop()
    fresh = tb.paper.new_run("demo")
    assert fresh.startswith("demo-") and fresh != tb.paper.new_run("demo")
    listed = tb.paper.runs(store)
    assert list(listed.columns) == ["run", "state_dir", "in_use", "session_time", "finished", "kill_switch",
                                    "orders", "fills"]
    assert listed.set_index("run").loc["nb", "orders"] == 1


# -- no hangs ---------------------------------------------------------------------------------------------
def test_a_full_disk_under_the_venue_journal_fails_the_session_in_seconds_and_wait_returns(store, frames, sessions):
    session = session_for(store, frames, sessions, speed=None).start()
    session.wait_until(AT_2356, pause=True)
    journal_fd = session.venue._journal._fd
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, journal_fd)  # the disk under the venue's journal is full from now on
    os.close(full)
    started = time.monotonic()
    buy(session)  # the venue cannot journal it: refused as a venue error
    session.resume()  # the next step's write fails the loop; closing the venue fails too (its trim)
    with pytest.raises(SessionError, match=r"failed in its event loop: OSError: \[Errno 28\] No space left") as failed:
        session.wait(timeout=20)
    assert time.monotonic() - started < 10
    assert session.state is SessionState.FAILED and "\n" not in str(failed.value)
    assert not tb.paper.is_locked(session.state_dir)  # released
    started = time.monotonic()
    with pytest.raises(SessionError, match="has ended"):
        buy(session)
    assert time.monotonic() - started < 1


def test_timeouts_say_what_they_waited_for(store, frames, sessions):
    session = session_for(store, frames, sessions, speed=None).start()
    session.wait_until(AT_2356, pause=True)
    with pytest.raises(SessionTimeoutError, match=r"still paused \(paused: session.resume\(\)") as info:
        session.wait(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(SessionError, match="the replay is paused at 2024-08-08T23:56:00.* would never reach"):
        session.wait_until(AT_0000, timeout=30)  # refused at once, not after 30 s
    session.stop()
    real_time = session_for(store, frames, sessions, run="slow", speed=1.0).start()
    with pytest.raises(SessionTimeoutError, match=r"waited 0.2 s for session time 2024-08-09T00:00:00Z; it is at "
                                                  r"2024-08-08T23:54:.* \(state running\)"):
        real_time.wait_until(AT_0000, timeout=0.2)
    started = time.monotonic()
    real_time.stop()
    assert time.monotonic() - started < 5
    never = Session(store, calibrations=[BTC], run="never")
    sessions.append(never)
    with pytest.raises(SessionError, match="submit: the session is not running"):
        buy(never)
    started = time.monotonic()
    with pytest.raises(SessionError, match=r"wait_until: the session is not running \(state created\)"):
        never.wait_until(AT_0000, timeout=30)
    with pytest.raises(SessionError, match=r"wait: the session is not running \(state created\); call start"):
        never.wait()
    assert time.monotonic() - started < 1
    never.stop()
    assert never.wait() is SessionState.STOPPED


# -- temporary folders of a killed flush -------------------------------------------------------------------
def test_flush_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path, run_python):
    dead = run_python("import os; print(os.getpid())")
    dead_pid = int(dead.stdout)
    leftovers = {
        "dead": tmp_path / f"tb-flush-{dead_pid}-abc",
        "mine": tmp_path / f"tb-flush-{os.getpid()}-def",
        "alive": tmp_path / f"tb-flush-{os.getppid()}-ghi",
        "reused": tmp_path / f"tb-flush-{os.getppid()}-jkl",  # older than the process holding its pid now
        "other": tmp_path / "tb-flush-nopid",
    }
    for folder in leftovers.values():
        folder.mkdir()
        (folder / "records.journal").write_bytes(b"x" * 100)
    os.utime(leftovers["reused"], (1_000_000, 1_000_000))
    removed = clean_flush_leftovers(tmp_path)
    assert sorted(removed) == sorted([leftovers["dead"], leftovers["reused"]])
    assert [name for name, f in leftovers.items() if f.exists()] == ["mine", "alive", "other"]


def test_a_flush_killed_mid_copy_leaves_a_folder_the_next_start_removes(store, frames, sessions, tmp_path,
                                                                        run_python, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # a process that dies while its flush folder exists (as a kill -9 inside write_order_path)
    code = textwrap.dedent(f"""
        import os, tempfile
        tempfile.tempdir = {str(scratch)!r}
        folder = tempfile.mkdtemp(prefix=f"tb-flush-{{os.getpid()}}-")
        open(os.path.join(folder, "records.journal"), "wb").write(b"x" * 1000)
        os.kill(os.getpid(), 9)
    """)
    assert run_python(code).returncode == -9
    assert len(list(scratch.glob("tb-flush-*"))) == 1
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    session_for(store, frames, sessions).start()
    assert list(scratch.glob("tb-flush-*")) == []


def test_two_runs_trade_the_same_signal_id_under_their_own_order_ids(store, frames, sessions):
    first = session_for(store, frames, sessions, run="first", speed=None).start()
    first.wait_until(AT_2356, pause=True)
    [order_first] = buy(first)
    first.stop()
    before = store.query("SELECT * FROM orders WHERE account_id = 'first' ORDER BY client_order_id")
    fresh = session_for(store, frames, sessions, run=tb.paper.new_run(), speed=None).start()
    fresh.wait_until(AT_2356, pause=True)
    [order_fresh] = buy(fresh)  # client order ids are scoped by account (the run): no clash, no refusal
    assert order_fresh.client_order_id != order_first.client_order_id
    assert order_fresh.intent.intent_id == order_first.intent.intent_id == "demo:sig-1"
    fresh.stop()
    after = store.query("SELECT * FROM orders WHERE account_id = 'first' ORDER BY client_order_id")
    assert after.equals(before)  # the other run's rows are untouched
    # each run holds its own order (both still in flight: stopped before the venue's next step)
    assert account_rows(store, "first") == account_rows(store, fresh.run)
    assert account_rows(store, fresh.run)["orders"] == 1


def test_a_session_that_cannot_be_built_lets_go_of_its_folder_at_once(store, frames, sessions):
    state = Path(f"{store.path}.runs/damaged")
    state.mkdir(parents=True)
    (state / "session.journal").write_bytes(b"deadbeef {}\n00000000 {}\n")  # damaged mid-file: refused
    for _ in range(2):  # the cell run again gets the same reason, not "in use"
        with pytest.raises(tb.StoreError, match="fails its checksum") as info:
            Session(store, calibrations=[BTC], feed=feed(frames), run="damaged")
        assert not isinstance(info.value, SessionLockedError)
        assert not tb.paper.is_locked(state)


def test_a_run_folder_deleted_by_hand_is_named_and_reset_clears_the_rows(store, frames, sessions):
    first = session_for(store, frames, sessions, speed=None).start()
    first.wait_until(AT_2356, pause=True)
    buy(first)
    first.stop()
    shutil.rmtree(first.state_dir)  # the "obvious" reset
    with pytest.raises(SessionError, match=r"paper run 'nb': the store holds \d+ records of its order journal but "
                                           r".* has none \(was the folder deleted\?\); to start the run over, "
                                           r"reset it: tb.Session\(..., run='nb', reset=True\)"):
        session_for(store, frames, sessions)
    assert tb.paper.reset(store, "nb")["orders"] == 1  # the rows the folder left behind
    assert not first.state_dir.exists() and "nb" not in tb.paper.runs(store)["run"].tolist()
    assert tb.paper.reset(store, "never-was") == dict.fromkeys(
        ["order_events", "fills", "positions", "alerts", "journal_offsets", "orders"], 0)
    again = session_for(store, frames, sessions, speed=None, reset=True).start()
    again.wait_until(AT_2356, pause=True)
    assert len(buy(again)) == 1
    again.stop()
    assert account_rows(store, "nb")["orders"] == 1


def test_an_order_journal_that_cannot_be_replayed_is_named_and_the_run_let_go(store, frames):
    from tradebook.store.records import encode_record, journal_line

    state = Path(f"{store.path}.runs/broken")
    state.mkdir(parents=True)
    (state / "oms.journal").write_bytes(journal_line(encode_record({"kind": "intent", "intent": {"bogus": 1}})))
    for _ in range(2):  # the same reason again, never "in use"
        with pytest.raises(tb.StoreError, match=r"oms.journal: record 1 cannot be replayed") as info:
            Session(store, calibrations=[BTC], feed=feed(frames), run="broken")
        assert "\n" not in str(info.value) and not tb.paper.is_locked(state)


def test_a_running_session_is_named_to_other_processes_and_lets_them_read_once_stopped(template, tmp_path, frames,
                                                                                        sessions):
    import subprocess
    import sys

    path = tmp_path / "workspace.duckdb"
    shutil.copy(template, path)
    store = tb.open_store(path)  # a notebook's store: read-only until its first write

    def info() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tradebook", "info", "--store", str(path)],
                              capture_output=True, text=True, timeout=120)

    session = session_for(store, frames, sessions, run="named", speed=None).start()
    session.wait_until(AT_2356, pause=True)
    buy(session)  # the session writes the store now
    session.oms.flush()
    held = info()
    assert held.returncode == 2 and len(held.stderr.strip().splitlines()) == 1, held.stderr
    assert "a paper session (run 'named')" in held.stderr and f"PID {os.getpid()}" in held.stderr
    session.stop()
    free = info()  # the session is over: the store is read-only again in this process
    assert free.returncode == 0, free.stderr
    assert len(store.orders()) == 1  # and this process still reads it
    store.close()
