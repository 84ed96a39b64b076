"""What every HTTP sandbox shares (tradebook.sandbox._server): a subclass must say how it answers."""

from __future__ import annotations

import pytest

from tradebook.sandbox._server import BackgroundServer


def test_a_sandbox_without_its_routes_cannot_be_built() -> None:
    class NoRoutes(BackgroundServer):
        name = "no routes"

    with pytest.raises(TypeError, match="build_app"):
        NoRoutes()
