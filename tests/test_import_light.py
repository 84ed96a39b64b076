"""``import tradebook`` stays light: no dashboard, backtest, broker or notebook stacks on import."""

from __future__ import annotations

import json

import pytest

HEAVY = ["panel", "vectorbt", "ccxt", "alpaca", "ib_async", "papermill", "bokeh", "numba"]

PROBE = """
import json, sys
{imports}
heavy = {heavy!r}
print(json.dumps(sorted({{m for m in sys.modules if m.split(".")[0] in heavy}})))
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import tradebook",
        "import tradebook as tb; tb.Store; tb.data; tb.get_instrument('SPY.ARCX')",
        "import tradebook.data, tradebook.store, tradebook.model",
    ],
    ids=["import", "lazy-attributes", "data-store-model"],
)
def test_no_heavy_modules_on_import(imports, run_python):
    result = run_python(PROBE.format(imports=imports, heavy=HEAVY))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_probe_detects_a_heavy_import(run_python):
    """Control: the same probe does see a heavy package once something imports it."""
    result = run_python(PROBE.format(imports="import tradebook, papermill", heavy=HEAVY))
    assert result.returncode == 0, result.stderr
    assert "papermill" in json.loads(result.stdout)
