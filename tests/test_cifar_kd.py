"""cifar_kd: the paper pairs' feature wiring (no training) and teachers saved and loaded by path."""

import dataclasses

import pytest

from experiments import cifar_kd
from jaxkd.errors import ConfigError
from jaxkd.models import make_model
from jaxkd.overrides import apply_overrides
from jaxkd.train import check_objective


@pytest.mark.parametrize("pair", cifar_kd.PRESETS["paper"].pairs)
def test_paper_pairs_are_wired_like_repdistiller(pair):
    config = cifar_kd.PRESETS["paper"]
    steps_per_epoch = 704  # 45,000 training images (10% held out for validation) / batch 64
    t_cfg, s_cfg = config.run_configs(pair, steps_per_epoch=steps_per_epoch, image_size=32, num_train=45_000)
    terms = s_cfg.objective.terms
    assert terms["fitnet"]["student"] == terms["fitnet"]["teacher"] == "stage2"  # the middle stage, as RD's hint
    assert terms["fitnet"]["regressor"] == "conv_bn_relu"  # RD's ConvReg: conv, BatchNorm, ReLU
    n_at = 4 if pair.startswith("vgg") else 3
    assert len(terms["at"]["teacher"]) == n_at and terms["at"]["weight"] == 1000.0  # RD: -b 1000 at 32x32
    assert terms["dkd"]["ramp_steps"] == 20 * steps_per_epoch  # mdistiller: 20 of 240 epochs
    assert "ramp_steps" not in terms["at"] and "ramp_steps" not in terms["dist"]  # the peers ramp DKD only
    assert s_cfg.recipe.total_steps(steps_per_epoch) == 240 * steps_per_epoch
    assert s_cfg.recipe.learning_rate == 0.05 and s_cfg.recipe.batch_size == 64
    # The rest of RepDistiller's table, with its taps (feat[-2], feat[1:-1], feat[:-1], preact) and -b weights.
    assert list(terms) == [*cifar_kd.METHODS, *cifar_kd.PEER_METHODS, "ce_main"]
    stages = terms["at"]["teacher"]
    assert terms["sp"]["student"] == terms["ft"]["teacher"] == stages[-1] and terms["sp"]["weight"] == 3000.0
    assert terms["nst"]["student"] == stages and terms["nst"]["weight"] == 50.0
    assert terms["fsp"]["teacher"] == ("stage0" if pair.startswith("vgg") else "stem", *stages)
    assert terms["ab"]["student"] == tuple(f"{s}_pre" for s in stages)
    assert (terms["cc"]["weight"], terms["rkd"]["weight"], terms["pkt"]["weight"]) == (0.02, 1.0, 30000.0)
    assert terms["crd"]["weight"] == 0.8 and terms["crd"]["n_data"] == 45_000
    # The init stage: RepDistiller's 30 epochs (of 240 here); FT's paraphraser at its init lr 0.01 (0.05 for VGG).
    assert terms["ft"]["init_steps"] == 30 * steps_per_epoch
    assert terms["ft"]["init_scale"] == pytest.approx((0.05 if pair.startswith("vgg") else 0.01) / 0.05 / 200)
    assert terms["ab"]["phases"] == terms["fsp"]["phases"] == terms["ce_main"]["phases"] == (30.0, 210.0)
    assert terms["ab"]["phase"] == "hard" and terms["ce_main"]["phase"] == "soft"
    conds = config.conditions(s_cfg.objective)
    for m in ("ab", "fsp", "ft"):
        assert conds[m]["ce.weight"] == 0.0 and conds[m]["ce_main.weight"] == 1.0
    assert conds["sp"]["ce.weight"] == 1.0 and conds["sp"]["ce_main.weight"] == 0.0
    # Every feature the terms read exists in the zoo models with compatible shapes (eval_shape only).
    models = [make_model(m.name, (32, 32, 3), 100, m.widths) for m in (s_cfg.model, t_cfg.model)]
    check_objective(s_cfg, *models)


def test_default_preset_objective_is_the_six_methods_with_dkd_at_and_dist_ramped():
    config = cifar_kd.PRESETS["default"]
    _, s_cfg = config.run_configs(config.pairs[0], steps_per_epoch=10, image_size=16)
    assert s_cfg.objective.terms == {
        "ce": {"weight": 1.0},
        "kd": {"weight": 0.9, "temperature": 4.0},
        "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "ramp_steps": 200},  # 2400 / 12
        "dist": {"weight": 1.0, "beta": 2.0, "gamma": 2.0, "temperature": 4.0, "ramp_steps": 600},  # a quarter
        "fitnet": {"weight": 100.0, "student": "stage2", "teacher": "stage2", "regressor": "conv_bn_relu"},
        "at": {
            "weight": 250.0,
            "student": ("stage1", "stage2", "stage3"),
            "teacher": ("stage1", "stage2", "stage3"),
            "ramp_steps": 200,
        },
    }
    # A ramp set on the command line wins over the fraction; ramped chooses the terms; fraction 0: constant weights.
    own = apply_overrides(config, ["objective.at.ramp_steps=50", "ramped=dkd", "ramp_fraction=0.25"])
    terms = own.run_configs(own.pairs[0], steps_per_epoch=10, image_size=16)[1].objective.terms
    assert terms["at"]["ramp_steps"] == 50 and terms["dkd"]["ramp_steps"] == 600 and "ramp_steps" not in terms["dist"]
    flat = apply_overrides(config, ["ramp_fraction=0"])
    terms = flat.run_configs(flat.pairs[0], steps_per_epoch=10, image_size=16)[1].objective.terms
    assert terms["at"]["ramp_steps"] == terms["dkd"]["ramp_steps"] == 0
    assert terms["dist"]["ramp_steps"] == 600  # its own fraction (0.25) does not follow ramp_fraction
    for bad, message in (("nope", "ramped names 'nope'"), ("at:x", "must be a number"), ("at:2", r"lie in \[0, 1\]")):
        with pytest.raises(ConfigError, match=message):
            apply_overrides(config, [f"ramped={bad}"])


def test_every_method_by_name_on_the_default_pair_fsp_needs_equal_widths():
    config = apply_overrides(cifar_kd.PRESETS["default"], ["methods=ce,sp,cc,rkd,pkt,nst,ft,ab,crd"])
    _, s_cfg = config.run_configs(config.pairs[0], steps_per_epoch=12, image_size=16, num_train=900)
    models = [make_model(m.name, (16, 16, 3), 10, m.widths) for m in config.models(config.pairs[0])[::-1]]
    check_objective(s_cfg, *models)
    assert s_cfg.objective.terms["ft"]["init_steps"] == round(2400 / 8)  # the first eighth of 2400 steps
    with pytest.raises(ConfigError, match="channels"):  # resnet20 (8, 8, 16, 32) vs resnet8 (4, 4, 8, 16)
        fsp = apply_overrides(config, ["methods=ce,fsp"])
        check_objective(fsp.run_configs(fsp.pairs[0], steps_per_epoch=12, image_size=16)[1], *models)


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
