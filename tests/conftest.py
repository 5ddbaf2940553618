"""Strict numerics for the whole suite; CPU only."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Tests build many trainers whose programs are identical (the same shapes and terms); a persistent
# compilation cache for this session compiles each once. Outside the tests nothing is cached.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="jaxkd-test-xla-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

# Tolerances keyed by dtype: (rtol, atol).
TOL = {"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-14)}


@pytest.fixture(scope="session")
def digits():
    from jaxkd.data import load_digits

    return load_digits()
