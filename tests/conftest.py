"""Strict numerics for the whole suite; CPU only."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# Tolerances keyed by dtype: (rtol, atol).
TOL = {"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-14)}


@pytest.fixture(scope="session")
def digits():
    from jaxkd.data import load_digits

    return load_digits()
