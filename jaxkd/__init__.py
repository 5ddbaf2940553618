"""jaxkd: knowledge distillation research in JAX/Flax.

The functional core: :mod:`jaxkd.losses` (pure per-example losses),
:mod:`jaxkd.train` (one run as a function of a key), :mod:`jaxkd.sweep`
(seeds × hyper-parameters as one compiled program), :mod:`jaxkd.data`
(offline and tfds datasets), :mod:`jaxkd.stats` and :mod:`jaxkd.results`
(seeds, error bars, tidy records).
"""

__version__ = "0.1.0"

# The public extension points (:mod:`jaxkd.extend`), imported on first use so that `import jaxkd` stays light.
_EXPORTS = {"register_term", "register_model", "register_dataset", "registered"}


def __getattr__(name):
    if name in _EXPORTS:
        from jaxkd import extend

        return getattr(extend, name)
    import importlib

    try:  # jaxkd.terms, jaxkd.study, ... without a separate import
        return importlib.import_module(f"jaxkd.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"jaxkd.{name}":
            raise
        raise AttributeError(f"module 'jaxkd' has no attribute {name!r}") from None


__all__ = ["__version__", "register_term", "register_model", "register_dataset", "registered"]
