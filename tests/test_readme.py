"""The README's Python snippets, run as printed, in a workspace `make demo` built.

The workspace is a temporary folder where ``tradebook demo`` built ``tradebook.duckdb``
(what ``make clean`` then ``make demo`` leaves), with the bundled ``data/`` beside it. Each
snippet runs in a fresh interpreter there, with a timeout: a snippet that hangs fails.
The paper-trading snippet is run four times on one store, as a notebook's Run All
repeated: each run trades cleanly, and none trades twice.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tradebook.data import bundled_data_dir
from tradebook.store import Store

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
RUN_TIMEOUT_S = 180


def readme_snippets() -> list[str]:
    return SNIPPET.findall((ROOT / "README.md").read_text())


def paper_snippet() -> str:
    found = [s for s in readme_snippets() if "tb.Session(store" in s]
    assert len(found) == 1, "expected one paper-trading snippet in the README"
    return found[0]


def run_snippet(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def demo_workspace(tmp_path_factory) -> Path:
    """A workspace as `make clean` then `make demo` leave it: the demo's store, the bundled data beside it."""
    root = tmp_path_factory.mktemp("readme")
    (root / "data").symlink_to(bundled_data_dir())
    built = subprocess.run([sys.executable, "-m", "tradebook", "demo", "--store", str(root / "tradebook.duckdb"),
                            "--no-serve"],
                           cwd=root, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-2000:]
    return root


@pytest.fixture
def workspace(demo_workspace, tmp_path) -> Path:
    """A copy of the demo workspace for one test (the snippets write to the store)."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "data").symlink_to(bundled_data_dir())
    shutil.copy(demo_workspace / "tradebook.duckdb", root / "tradebook.duckdb")
    return root


def counts(store_path: Path, account: str) -> dict[str, object]:
    with Store(store_path, read_only=True) as store:
        orders = store.query("SELECT client_order_id FROM orders WHERE account_id = ? ORDER BY 1", [account])
        fills = store.query("SELECT count(*) AS n FROM fills WHERE account_id = ?", [account])
        events = store.query("SELECT count(*) AS n FROM order_events e JOIN orders o USING (client_order_id) "
                             "WHERE o.account_id = ?", [account])
    return {"orders": orders["client_order_id"].tolist(), "fills": int(fills["n"].iloc[0]),
            "events": int(events["n"].iloc[0])}


def test_the_readme_has_the_snippets_this_file_runs():
    snippets = readme_snippets()
    assert len(snippets) >= 3
    assert 'run="readme"' in paper_snippet() and "reset=True" in paper_snippet()
    assert any("tb.paper.reset(" in s for s in snippets)


def test_every_python_snippet_of_the_readme_runs_as_printed(workspace):
    for number, code in enumerate(readme_snippets(), 1):
        result = run_snippet(code, workspace)
        assert result.returncode == 0, f"snippet {number} failed:\n{code}\n{result.stderr[-3000:]}"


def test_the_paper_snippet_run_four_times_on_one_store_trades_cleanly_and_never_twice(workspace):
    code = paper_snippet()
    seen = []
    for run in range(4):
        result = run_snippet(code, workspace)  # a timeout here is a hang: subprocess raises
        assert result.returncode == 0, f"run {run + 1}:\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr
        assert "finished" in result.stdout, result.stdout
        seen.append(counts(workspace / "tradebook.duckdb", "readme"))
    first = seen[0]
    assert first["orders"] and first["fills"] > 0  # the signal traded, and flatten closed it out
    # reset=True: each run starts the paper run over, so the store holds one run's orders, not four
    assert all(after == first for after in seen[1:]), seen
    assert not (workspace / "tradebook.duckdb.session").exists()
    assert sorted(p.name for p in (workspace / "tradebook.duckdb.runs").iterdir()) == ["readme"]


def test_the_paper_snippet_without_reset_resumes_then_says_in_one_line_what_to_do(workspace):
    code = paper_snippet().replace(", reset=True)", ")")
    assert code != paper_snippet()
    first = run_snippet(code, workspace)
    assert first.returncode == 0, first.stderr[-3000:]
    traded = counts(workspace / "tradebook.duckdb", "readme")
    second = run_snippet(code, workspace)
    assert second.returncode == 1
    last_line = second.stderr.strip().splitlines()[-1]
    assert last_line.startswith("tradebook.errors.SessionError: paper run 'readme' already replayed this feed")
    assert "reset=True" in last_line and "tb.paper.new_run()" in last_line
    assert counts(workspace / "tradebook.duckdb", "readme") == traded  # nothing sent again


def test_make_clean_removes_the_store_its_runs_and_stray_notebook_stores(tmp_path):
    """`make clean` run for real, on a copy of the Makefile in a scratch folder (never on the checkout)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    made = ["tradebook.duckdb", "tradebook.duckdb.wal", "tradebook.duckdb.holder",
            "tradebook.duckdb.runs/readme/oms.journal", "tradebook.duckdb.session/oms.journal",
            "notebooks/tradebook.duckdb", "notebooks/tradebook.duckdb.runs/paper-1/session.journal",
            ".venv/bin/python"]
    kept = ["data/README.md", "notebooks/03_paper.ipynb", "README.md"]
    for name in made + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    result = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [name for name in made if (tmp_path / name).exists()] == []
    assert not (tmp_path / "tradebook.duckdb.runs").exists()
    assert [name for name in kept if (tmp_path / name).exists()] == kept
