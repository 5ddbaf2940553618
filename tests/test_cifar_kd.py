"""cifar_kd: the paper pairs' feature wiring (no training) and teachers saved and loaded by path."""

import dataclasses

import pytest

from experiments import cifar_kd
from jaxkd.errors import ConfigError
from jaxkd.models import make_model
from jaxkd.train import check_objective


@pytest.mark.parametrize("pair", cifar_kd.PRESETS["paper"].pairs)
def test_paper_pairs_are_wired_like_repdistiller(pair):
    config = cifar_kd.PRESETS["paper"]
    steps_per_epoch = 704  # 45,000 training images (10% held out for validation) / batch 64
    t_cfg, s_cfg = config.run_configs(pair, steps_per_epoch=steps_per_epoch, image_size=32)
    terms = s_cfg.objective.terms
    assert terms["fitnet"]["student"] == terms["fitnet"]["teacher"] == "stage2"  # the middle stage, as RD's hint
    assert terms["fitnet"]["regressor"] == "conv_bn_relu"  # RD's ConvReg: conv, BatchNorm, ReLU
    n_at = 4 if pair.startswith("vgg") else 3
    assert len(terms["at"]["teacher"]) == n_at and terms["at"]["weight"] == 1000.0  # RD: -b 1000 at 32x32
    assert terms["dkd"]["ramp_steps"] == 20 * steps_per_epoch  # mdistiller: 20 of 240 epochs
    assert s_cfg.recipe.total_steps(steps_per_epoch) == 240 * steps_per_epoch
    assert s_cfg.recipe.learning_rate == 0.05 and s_cfg.recipe.batch_size == 64
    # Every feature the terms read exists in the zoo models with compatible shapes (eval_shape only).
    models = [make_model(m.name, (32, 32, 3), 100, m.widths) for m in (s_cfg.model, t_cfg.model)]
    check_objective(s_cfg, *models)


def test_at_weight_scales_with_image_area():
    config = cifar_kd.PRESETS["default"]
    _, s16 = config.run_configs(config.pairs[0], steps_per_epoch=10, image_size=16)
    assert s16.objective.terms["at"]["weight"] == pytest.approx(1000.0 / 4)


def test_bad_pairs_are_refused_before_any_work():
    with pytest.raises(ConfigError, match="teacher:student"):
        dataclasses.replace(cifar_kd.PRESETS["default"], pairs=("resnet20",))
    with pytest.raises(ConfigError, match="unknown model"):
        dataclasses.replace(cifar_kd.PRESETS["default"], pairs=("resnet20:resnet9",))
    with pytest.raises(ConfigError, match="one path per pair"):
        dataclasses.replace(cifar_kd.PRESETS["default"], teacher_paths=("a", "b"))
