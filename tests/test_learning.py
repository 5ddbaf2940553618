"""Training learns: one run per model family, at a fixed seed, through the public engine (``make_train``,
``Trainer.run``), ends far beyond what the same run reaches with a broken update or loss.

Each family trains with Adam (lr 1e-2, batch 64) and is evaluated once, at the end. Two bounds per run:

* test cross-entropy below half of log(10) (1.15), the loss of a uniform prediction; an untrained network starts
  near log(10) (2.3) and a run that does not learn stays there or rises;
* test accuracy above a floor set well below what the run reaches (chance is 0.1).

Data: digits (8x8) for the MLP and the 2-D CNN, MNIST-1D (length 40) for the 1-D CNN, and digits as [8, 8, 1] images
for ``resnet8``, the CIFAR zoo's smallest ResNet (RepDistiller's resnet8), which learns them in 60 steps.

What the runs reach (seed 0, XLA:CPU), and what the same runs reached with the library broken on purpose
(``recipes.apply_updates`` with its sign flipped; ``terms.ce`` returning zeros; the learning rate multiplied by 0 in
``apply_updates``; each batch's labels rolled by one example in ``Trainer.train_batch``), test acc / test loss:

=======  =============  ==============  =============  =============  =============
family   trained        sign flipped    CE zeros       lr 0           labels rolled
=======  =============  ==============  =============  =============  =============
mlp      0.950 / 0.203  0.092 / 959.6   0.134 / 2.359  0.134 / 2.359  0.114 / 2.301
cnn2d    0.936 / 0.316  0.075 / 64.10   0.078 / 2.474  0.078 / 2.474  0.047 / 2.321
cnn1d    0.885 / 0.367  0.102 / 1288    0.099 / 2.377  0.099 / 2.377  0.083 / 2.338
resnet8  0.953 / 0.163  0.103 / 214.3   0.095 / 2.354  0.095 / 2.354  0.050 / 2.343
=======  =============  ==============  =============  =============  =============
"""

import math

import jax
import numpy as np
import pytest

from jaxkd.config import EvalConfig, ModelConfig, RunConfig
from jaxkd.data import Dataset, load_dataset
from jaxkd.recipes import RecipeConfig
from jaxkd.train import make_train

UNIFORM_LOSS = math.log(10)  # cross-entropy of a uniform prediction over the 10 classes of every dataset here


def digits_images() -> Dataset:
    """Digits as [8, 8, 1] images, the input layout of the CIFAR zoo."""
    d = load_dataset("digits")
    return Dataset("digits", d.x_train[..., None], d.y_train, d.x_test[..., None], d.y_test, d.num_classes)


# family: (dataset, model, steps, test accuracy floor)
FAMILIES = {
    "mlp": (lambda: load_dataset("digits"), ModelConfig("mlp", (64,)), 60, 0.85),
    "cnn2d": (lambda: load_dataset("digits"), ModelConfig("cnn2d", (16, 32)), 60, 0.8),
    "cnn1d": (lambda: load_dataset("mnist1d"), ModelConfig("cnn1d", (32, 64)), 200, 0.75),
    "resnet8": (digits_images, ModelConfig("resnet8"), 60, 0.85),  # the CIFAR zoo's smallest ResNet
}


def train(family: str) -> dict[str, float]:
    """The family's run at seed 0; its metrics at the end (one evaluation)."""
    dataset, model, steps, _ = FAMILIES[family]
    config = RunConfig(
        model=model,
        recipe=RecipeConfig(optimizer="adam", learning_rate=1e-2, steps=steps, batch_size=64),
        eval=EvalConfig(every=steps),
    )
    _, history = jax.jit(make_train(config, dataset()).run)(jax.random.key(0))
    return {k: float(np.asarray(v)[-1]) for k, v in history.items()}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_learns(family):
    m = train(family)
    assert m["test/loss"] < UNIFORM_LOSS / 2, m
    assert m["test/acc"] > FAMILIES[family][3], m
