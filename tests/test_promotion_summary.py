"""promotion_summary is presentation: it uses the promotion package's public names only."""

from __future__ import annotations

import ast
from pathlib import Path

import tradebook.promotion_summary as summary


def test_imports_only_public_names_of_the_package():
    tree = ast.parse(Path(summary.__file__).read_text())
    private = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and (node.module or "").startswith("tradebook") for alias in node.names
               if alias.name.startswith("_")]
    assert private == [], f"private names imported: {private}"
