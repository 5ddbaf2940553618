"""Strict numerics for the whole suite; CPU only."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Tests build many trainers whose programs are identical (the same shapes and terms); a persistent
# compilation cache for this test run compiles each once, shared by the pytest-xdist workers of one
# run (their common PYTEST_XDIST_TESTRUNUID). Outside the tests nothing is cached.
_run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _run:
    _cache = os.path.join(tempfile.gettempdir(), f"jaxkd-test-xla-{_run}")
    os.makedirs(_cache, exist_ok=True)
else:
    _cache = tempfile.mkdtemp(prefix="jaxkd-test-xla-")
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# The same cache for the processes tests start (preemption's killed sweeps, multi-process runs, the documented
# example, the GPU check's dry run): JAX reads these at import.
os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

# jaxkd's own numerics (losses, features, metrics, the interaction tensor, augmentation) run under strict
# dtype promotion: no silent int -> float or float32 -> float64 mixing. Not the whole suite: optax's Adam
# (bias correction divides float32 by the int32 step count) and flax's avg_pool promote implicitly.
STRICT_PROMOTION = {
    "tests.test_losses",
    "tests.test_features",
    "tests.test_metrics",
    "tests.test_interaction",
    "tests.test_augment",
}


@pytest.fixture(autouse=True)
def _strict_promotion_for_own_numerics(request):
    if request.module.__name__ in STRICT_PROMOTION:
        with jax.numpy_dtype_promotion("strict"):
            yield
    else:
        yield


# Tolerances keyed by dtype: (rtol, atol).
TOL = {"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-14)}


@pytest.fixture(scope="session")
def digits():
    from jaxkd.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def subdistill_smoke_dir(tmp_path_factory):
    """One ``subdistill`` run of its ``runlocal`` smoke configuration, shared by the tests that read it.

    ``tests/test_subdistill.py`` checks its outputs, ``tests/test_explanations.py`` explains its students;
    both modules are in the xdist group ``subdistill`` (``make test`` runs ``--dist loadgroup``), so the
    run is trained once per test run. The tests only read it.
    """
    import experiments.subdistill as sd

    out = tmp_path_factory.mktemp("subdistill")
    sd.run(sd.runlocal(sd.PRESETS["default"]), str(out), progress=False)
    return out
