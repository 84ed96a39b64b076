"""The paper-fill simulator: ground truth from real data, the fill model, its calibration and fidelity.

Submodules load on use (`tradebook.sim.truth`, `.book`, `.fill_model`, `.calibrate`); numba
is imported only by the ones that need it.
"""
