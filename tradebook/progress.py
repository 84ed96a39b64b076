"""Progress bars for the long steps (loading, calibration, fidelity, replays), quiet where nobody watches.

``progress=None`` (every job's default) shows a bar only to a person: in a Jupyter
kernel, or when stderr is a terminal. Tests, pipes and CI stay quiet; a scheduled
papermill run sets ``TRADEBOOK_PROGRESS=0`` (``1`` forces bars on), and
:func:`tradebook.notebook.execute` does so itself. tqdm is imported
only when a bar is shown, so ``import tradebook`` stays light.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tradebook.errors import ConfigError

T = TypeVar("T")

PROGRESS_ENV = "TRADEBOOK_PROGRESS"


def _in_notebook_kernel() -> bool:
    # a kernel is running only when ipykernel is loaded and IPython's shell is the kernel's (not the terminal's)
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show a bar: ``progress`` when given, else the environment variable, else whether a person watches."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise ConfigError(f"progress is {progress!r}; expected True, False or None (automatic)")
        return progress
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced:
        raise ConfigError(f"{PROGRESS_ENV}={forced!r}; expected 0 or 1 (or unset: automatic)")
    if "PYTEST_CURRENT_TEST" in os.environ or os.environ.get("CI"):
        return False
    if _in_notebook_kernel():  # a kernel run by nbval or a test inherits PYTEST_CURRENT_TEST above
        return True
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def track(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
          progress: bool | None = None) -> Iterator[T]:
    """Iterate ``iterable``, with a bar when :func:`progress_enabled` says so (the plain iterator otherwise)."""
    if not progress_enabled(progress):
        yield from iterable
        return
    from tqdm.auto import tqdm

    with tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) as bar:
        yield from bar


class Bar:
    """A bar advanced by hand (``update(n)``), for work measured in rows or time rather than items.

    Disabled bars cost one attribute check per update. Use as a context manager.
    """

    def __init__(self, *, total: float | None, desc: str = "", unit: str = "it", progress: bool | None = None,
                 unit_scale: bool = False) -> None:
        self._bar: Any = None
        if progress_enabled(progress):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                             unit_scale=unit_scale)

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(self, n: float = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_description(self, desc: str) -> None:
        if self._bar is not None:
            self._bar.set_description(desc, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
