"""The layer order of the package, read from its source: each module imports only its own layer or lower.

Layers, bottom to top (:data:`LAYERS`):

0. model: ``model``, ``errors``, configuration (``config``, ``config_file``, ``redaction``) and
   process settings (``runtime``): what every layer may read.
1. core: ``data``, ``sim``, ``store``, ``execution``, ``venues``.
2. analysis: ``portfolio``, ``research``, ``promotion``, ``sandbox``, ``strategies``.
3. session: ``session``, ``paper`` (named paper runs).
4. presentation: ``cli``, ``notebook``, ``figures``, ``views``, ``demo``, ``reports``,
   ``progress``, ``widgets``, the run and promotion summaries (what the report notebooks
   show) and the ``tradebook`` facade itself (its lazy names reach every layer).

Every import counts, at module level or inside a function (that is how heavy modules
are deferred), and so does a string naming a tradebook module exactly (the lazy re-export
tables); imports under ``if TYPE_CHECKING:`` do not. Today's breaches are listed in
:data:`KNOWN_VIOLATIONS` and :data:`KNOWN_CYCLES`, each with its reason: the test passes
with them, fails on any new one, and fails when a listed one is gone (take it off the list).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tradebook"

LAYER_NAMES = ("model", "core", "analysis", "session", "presentation")
LAYERS: dict[str, int] = {
    "model": 0, "errors": 0, "config": 0, "config_file": 0, "redaction": 0, "runtime": 0,
    "data": 1, "sim": 1, "store": 1, "execution": 1, "venues": 1,
    "portfolio": 2, "research": 2, "promotion": 2, "sandbox": 2, "strategies": 2, "tca": 2, "alerts": 2,
    "session": 3, "session_parts": 3, "paper": 3,
    "cli": 4, "__main__": 4, "notebook": 4, "figures": 4, "views": 4, "demo": 4, "reports": 4, "progress": 4,
    "widgets": 4, "dashboard": 4, "monitor": 4, "tradebook": 4,
    "run_summary": 4, "promotion_summary": 4,  # the tables and evidence the report notebooks show
}

# (importer, imported) -> why it is tolerated today. Issue 13's refactor removes them.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {
    ("tradebook.research.runner", "tradebook.session"):
        "paper_replay runs a strategy through a real Session: research drives a session from below",
    ("tradebook.sim.plots", "tradebook.figures"):
        "the simulator's fidelity plots use the shared figure helpers: the plots belong in presentation",
    ("tradebook.sim.fidelity", "tradebook.progress"):
        "the fidelity run reports progress itself instead of taking a callback",
    ("tradebook.sim.transfer_report", "tradebook.progress"):
        "the transfer report (split out of sim.fidelity) reports progress itself instead of taking a callback",
    ("tradebook.session", "tradebook.progress"):
        "the session reports replay progress itself instead of taking a callback",
    ("tradebook.research.sweep", "tradebook.progress"):
        "a sweep reports the progress of its trials itself instead of taking a callback",
    ("tradebook.session", "tradebook.views"):
        "the session builds its status views for notebooks; views should read the session, not the reverse",
    ("tradebook.session", "tradebook.monitor.server"):
        "session.dashboard() is a thin lazy wrapper handing the session to the monitor's server (presentation)",
    ("tradebook.session", "tradebook.widgets"):
        "session.controls() is a thin lazy wrapper handing the session to its notebook controls (presentation)",
}
# groups of top-level packages that import each other in a loop (directly or through others), with the reason
KNOWN_CYCLES: dict[frozenset[str], str] = {
    frozenset({"monitor", "research", "session", "tca", "widgets"}):
        "the monitor reads TCA rows (tca -> research.metrics), research.runner drives a Session, and "
        "session.dashboard()/controls() hand the session to the monitor and widgets: the two known violations "
        "(research -> session, session -> presentation) close the loop",
}
BROKER_SDKS = ("alpaca", "ccxt", "ib_async", "ib_insync", "ibapi")


# -- reading the imports ---------------------------------------------------------------------------
def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, name: str, modules: set[str], top: str) -> set[str]:
    """Every module ``name`` imports (own package's names only, plus any broker SDK), TYPE_CHECKING aside."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.orelse:
                    visit_one(stmt)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
            found.add(node.value)  # a lazy import by name (importlib.import_module, re-export tables)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return {m for m in found if m == top or m.startswith(top + ".") or m.split(".")[0] in BROKER_SDKS} - {name}


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    return {name: imports_of(path, name, modules, root.name) for name, path in files.items()}


def unit(module: str) -> str:
    """The top-level package or module a module belongs to (``tradebook`` for the facade itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]], layers: dict[str, int]) -> dict[tuple[str, str], str]:
    out = {}
    for importer, targets in graph.items():
        for target in targets:
            if target.split(".")[0] in BROKER_SDKS or unit(target) not in layers or unit(importer) not in layers:
                continue
            have, want = layers[unit(importer)], layers[unit(target)]
            if want > have:
                out[importer, target] = (f"{importer} ({LAYER_NAMES[have]}) imports {target} "
                                         f"({LAYER_NAMES[want]}, above it)")
    return out


def package_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of top-level packages that reach each other through imports (the loops), each as a set."""
    edges: dict[str, set[str]] = defaultdict(set)
    for importer, targets in graph.items():
        for target in targets:
            if target.split(".")[0] not in BROKER_SDKS and unit(target) != unit(importer):
                edges[unit(importer)].add(unit(target))
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    reach = {n: _reachable(n, edges) for n in nodes}
    loops = {frozenset({a} | {b for b in reach[a] if a in reach[b]}) for a in nodes if a in reach[a]}
    return sorted(loops, key=sorted)


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


# -- the rules ---------------------------------------------------------------------------------
def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    missing = sorted({unit(m) for m in graph} - set(LAYERS))
    assert not missing, f"give these a layer in tests/test_layers.py LAYERS: {missing}"


def test_imports_follow_the_layer_order(graph: dict[str, set[str]]) -> None:
    found = layer_violations(graph, LAYERS)
    new = [found[key] for key in sorted(set(found) - set(KNOWN_VIOLATIONS))]
    assert not new, "imports against the layer order:\n" + "\n".join(new)
    gone = sorted(set(KNOWN_VIOLATIONS) - set(found))
    assert not gone, f"these are fixed: take them off KNOWN_VIOLATIONS: {gone}"


def test_no_new_import_loops_between_packages(graph: dict[str, set[str]]) -> None:
    loops = package_cycles(graph)
    new = [sorted(loop) for loop in loops if loop not in KNOWN_CYCLES]
    assert not new, f"packages that import each other in a loop (directly or through others): {new}"
    gone = [sorted(loop) for loop in KNOWN_CYCLES if loop not in loops]
    assert not gone, f"these loops are gone: take them off KNOWN_CYCLES: {gone}"


def test_nothing_below_presentation_imports_the_sandbox(graph: dict[str, set[str]]) -> None:
    users = sorted(m for m, targets in graph.items() if unit(m) != "sandbox" and LAYERS.get(unit(m), 4) < 4
                   and any(unit(t) == "sandbox" for t in targets))
    assert not users, f"the sandbox is for tests and users, not the core: {users}"


def test_broker_sdks_are_imported_only_by_venue_adapters(graph: dict[str, set[str]]) -> None:
    users = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                   if t.split(".")[0] in BROKER_SDKS and unit(m) != "venues")
    assert not users, f"a broker SDK outside tradebook/venues (the sandbox speaks the protocols itself): {users}"


# -- the checker can fail ----------------------------------------------------------------------------
def test_the_checker_finds_deferred_imports_and_skips_type_checking(tmp_path: Path) -> None:
    root = tmp_path / "tradebook"
    (root / "model").mkdir(parents=True)
    (root / "store").mkdir()
    (root / "__init__.py").write_text("")
    (root / "model" / "__init__.py").write_text("")
    (root / "store" / "__init__.py").write_text("from . import db\n")
    (root / "store" / "db.py").write_text("from ..model import orders\n")
    (root / "model" / "orders.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tradebook.store.db import Db\n"
        "def load():\n    from tradebook.store import db\n    return db\n"
        "LAZY = {'X': 'tradebook.store.db'}\n")
    (root / "session.py").write_text("import ib_async\nfrom tradebook.model.orders import load\n")
    graph = import_graph(root)
    assert graph["tradebook.model.orders"] == {"tradebook.store.db"}  # deferred and lazy, not TYPE_CHECKING
    assert graph["tradebook.store.db"] == {"tradebook.model.orders"}  # relative import resolved
    assert graph["tradebook.store"] == {"tradebook.store.db"}
    assert graph["tradebook.session"] == {"ib_async", "tradebook.model.orders"}
    found = layer_violations(graph, {"model": 0, "store": 1, "session": 3})
    assert list(found) == [("tradebook.model.orders", "tradebook.store.db")]
    assert package_cycles(graph) == [frozenset({"model", "store"})]


if __name__ == "__main__":  # print the graph's breaches, e.g. to update the lists above
    g = import_graph(PACKAGE)
    print("\n".join(layer_violations(g, LAYERS).values()), package_cycles(g), sep="\n", file=sys.stdout)
