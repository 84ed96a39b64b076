"""The paper-fill simulator: ground truth from real data, the fill model, its calibration and fidelity.

Submodules load on use (`tradebook.sim.truth`, `.book`, `.fill_model`, `.calibrate`); numba
is imported only by the ones that need it.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # `tradebook.sim.calibrate_from(...)`: calibrate from your own files or frames (tradebook.sim.sources),
    # imported on first use so `import tradebook.sim` stays light
    if name == "calibrate_from":
        from tradebook.sim.sources import calibrate_from

        return calibrate_from
    raise AttributeError(f"module 'tradebook.sim' has no attribute {name!r}")
