"""jaxkd: knowledge distillation research in JAX/Flax.

The functional core: :mod:`jaxkd.losses` (pure per-example losses),
:mod:`jaxkd.train` (one run as a function of a key), :mod:`jaxkd.sweep`
(seeds × hyper-parameters as one compiled program), :mod:`jaxkd.data`
(offline and tfds datasets), :mod:`jaxkd.stats` and :mod:`jaxkd.results`
(seeds, error bars, tidy records).
"""

__version__ = "0.1.0"
