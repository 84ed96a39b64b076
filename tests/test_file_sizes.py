"""The size rule of the package: a module over :data:`MAX_LINES` lines says why at its top.

A file that grows past about 800 lines usually holds several jobs (issue 13). It may stay
long only when its module docstring carries a line starting ``Why this file is long:``
with the reason, so a reader sees the choice was made, not drifted into.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tradebook"
MAX_LINES = 800
REASON_MARK = "Why this file is long:"


def line_count(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for _ in lines)


def has_reason(path: Path) -> bool:
    """The module docstring holds a line starting with :data:`REASON_MARK` followed by a reason."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))) or ""
    return any(line.strip().startswith(REASON_MARK) and line.strip() != REASON_MARK for line in docstring.splitlines())


def long_files_without_reason(root: Path, max_lines: int = MAX_LINES) -> list[str]:
    """Each module under ``root`` longer than ``max_lines`` with no reason in its docstring, as 'path (n lines)'."""
    return [f"{path.relative_to(root.parent)} ({n} lines)" for path in sorted(root.rglob("*.py"))
            if (n := line_count(path)) > max_lines and not has_reason(path)]


def test_every_long_module_says_why_at_its_top() -> None:
    found = long_files_without_reason(PACKAGE)
    assert not found, (f"modules over {MAX_LINES} lines: split them by job, or add a line starting "
                       f"{REASON_MARK!r} with the reason to the module docstring: {found}")


def test_the_rule_finds_a_long_module_and_accepts_a_reason(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    root.mkdir()
    body = "x = 1\n" * 10
    (root / "short.py").write_text('"""Short."""\nx = 1\n')
    (root / "long.py").write_text('"""Long, with no reason."""\n' + body)
    (root / "empty_reason.py").write_text(f'"""Long.\n\n{REASON_MARK}\n"""\n' + body)
    (root / "comment_only.py").write_text(f"# {REASON_MARK} a comment is not the docstring\n" + body)
    (root / "explained.py").write_text(f'"""Long.\n\n{REASON_MARK} one table the protocol defines.\n"""\n' + body)
    assert long_files_without_reason(root, max_lines=5) == [
        "pkg/comment_only.py (11 lines)", "pkg/empty_reason.py (14 lines)", "pkg/long.py (11 lines)"]
    assert long_files_without_reason(root, max_lines=20) == []
