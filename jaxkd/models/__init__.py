"""Model registry: ``make_model(name, in_shape, num_classes, widths=None, dtype="float32")``.

Every model returns ``(logits, features)`` where ``features`` maps layer
names to intermediate activations (for layer-wise distillation and analysis).
The CIFAR zoo uses the peers' names (``resnet8x4``, ``wrn_40_2``, ``vgg13``,
``resnet18``, ``vit_tiny``); ``docs/models.md`` lists each model's parameter
count next to the reference implementation's.
"""

from __future__ import annotations

import functools

from flax import nnx

from jaxkd.errors import ConfigError, check_name
from jaxkd.models.cnn import CNN1D, CNN2D
from jaxkd.models.functional import FunctionalModel
from jaxkd.models.mlp import MLP
from jaxkd.models.resnet import CifarResNet, ResNet
from jaxkd.models.sdstudent import WIDTHS as SD_WIDTHS
from jaxkd.models.sdstudent import SubDistillStudent
from jaxkd.models.vgg import VGG
from jaxkd.models.vit import ViT
from jaxkd.models.wrn import WideResNet

_p = functools.partial
MODELS = {"mlp": MLP, "cnn2d": CNN2D, "cnn1d": CNN1D}
MODELS |= {f"resnet{d}": _p(CifarResNet, depth=d) for d in (8, 14, 20, 32, 44, 56, 110)}
MODELS |= {
    "resnet8x4": _p(CifarResNet, depth=8, channels=(32, 64, 128, 256)),
    "resnet32x4": _p(CifarResNet, depth=32, channels=(32, 64, 128, 256)),
}
MODELS |= {f"wrn_{d}_{k}": _p(WideResNet, depth=d, widen=k) for d in (16, 40) for k in (1, 2)}
MODELS |= {f"vgg{d}": _p(VGG, depth=d) for d in (8, 11, 13, 16, 19)}
MODELS |= {f"resnet{d}": _p(ResNet, depth=d) for d in (18, 34, 50, 101, 152)}
MODELS |= {
    "vit_tiny": _p(ViT, dim=192, depth=6, heads=3, mlp_ratio=2),
    "vit_small": _p(ViT, dim=384, depth=7, heads=6, mlp_ratio=2),
}
# SubDistill's student family: sdstudent_W1_W2_W3_W4 at the reference's four sizes; ``sdstudent`` is the first.
MODELS |= {"sdstudent": SubDistillStudent}
MODELS |= {"sdstudent_" + "_".join(map(str, w)): _p(SubDistillStudent, channels=w) for w in SD_WIDTHS}

# The keyword each model takes for its layer sizes (models not listed have fixed widths).
_WIDTH_KWARG = {"mlp": "hidden", "cnn2d": "channels", "cnn1d": "channels"}
_WIDTH_KWARG |= {
    name: "channels" for name, ctor in MODELS.items() if getattr(ctor, "func", None) in (CifarResNet, ResNet, VGG)
}
_WIDTH_KWARG["sdstudent"] = "channels"
DTYPES = ("float32", "bfloat16")
_SPATIAL = {name for name, ctor in MODELS.items() if getattr(ctor, "func", None) is not None} | {"sdstudent"}


def set_model_options(name: str, *, widths: str | None = None, spatial: bool = False) -> None:
    """For a registered model (:func:`jaxkd.register_model`): the keyword that receives ``ModelConfig.widths``
    (None: fixed widths) and whether it takes ``[H, W, C]`` images and a compute ``dtype``."""
    _WIDTH_KWARG.pop(name, None)
    _SPATIAL.discard(name)
    if widths is not None:
        _WIDTH_KWARG[name] = widths
    if spatial:
        _SPATIAL.add(name)


def make_model(name: str, in_shape, num_classes: int, widths=None, dtype: str = "float32") -> FunctionalModel:
    """Build a :class:`FunctionalModel` by registry name.

    Args:
      name: one of ``MODELS``.
      in_shape: shape of one input example (without batch); ``[H, W, C]`` for the zoo.
      num_classes: number of logits.
      widths: hidden sizes (MLP), channels (CNNs, CIFAR ResNets: stem + 3
        stages, ResNet-18..152: stem + 4 stages, VGG: one per block); ``None``
        for the model's own.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (parameters,
        logits and features stay float32).
    """
    check_name("model", name, MODELS)
    check_name("model dtype", dtype, DTYPES)
    kwargs = {}
    if widths is not None:
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) <= 0:
            raise ConfigError(f"model widths must be positive integers, got {widths}")
        if name not in _WIDTH_KWARG:
            raise ConfigError(f"model {name!r} has fixed widths; leave model.widths unset")
        kwargs[_WIDTH_KWARG[name]] = widths
    in_shape = tuple(int(s) for s in in_shape)
    if name in _SPATIAL and len(in_shape) != 3:
        raise ConfigError(f"model {name!r} takes [H, W, C] images, got inputs of shape {in_shape}")
    if dtype != "float32":
        if name not in _SPATIAL:
            raise ConfigError(f"model {name!r} computes in float32 only; dtype={dtype!r} is for the zoo models")
        kwargs["dtype"] = dtype
    ctor = MODELS[name]

    def build(rngs: nnx.Rngs):
        try:
            return ctor(in_shape, num_classes, rngs=rngs, **kwargs)
        except ValueError as err:  # layout errors (channel counts, patch size) are the user's config
            raise ConfigError(f"model {name!r}: {err}") from None

    return FunctionalModel(
        name=name, ctor=build, num_classes=num_classes, in_shape=in_shape, widths=widths, dtype=dtype
    )


def feature_shapes(name: str, in_shape, num_classes: int = 10, widths=None) -> dict[str, tuple[int, ...]]:
    """``{feature: shape of one example's activation}`` of model ``name`` on inputs of ``in_shape``.

    The names feature terms read (``fitnet``'s ``student``/``teacher``,
    ``at``'s, a user term's ``student_features``); computed from abstract
    shapes (no FLOPs, no parameters allocated).
    """
    import jax
    import jax.numpy as jnp

    m = make_model(name, in_shape, num_classes, widths)
    params, rest = jax.eval_shape(m.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, *m.in_shape), jnp.float32)
    _, feats = jax.eval_shape(lambda p, r, x: m.apply(p, r, x, train=False)[:2], params, rest, x)
    return {k: tuple(v.shape[1:]) for k, v in sorted(feats.items())}


__all__ = [
    "feature_shapes",
    "MODELS",
    "DTYPES",
    "FunctionalModel",
    "make_model",
    "set_model_options",
    "MLP",
    "CNN1D",
    "CNN2D",
    "CifarResNet",
    "ResNet",
    "WideResNet",
    "VGG",
    "ViT",
    "SubDistillStudent",
]
