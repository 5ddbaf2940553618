"""cifar_kd: the paper pairs' feature wiring (no training) and teachers saved and loaded by path."""

import dataclasses
import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest

from experiments import cifar_kd
from jaxkd.data import Dataset
from jaxkd.errors import ConfigError
from jaxkd.models import make_model
from jaxkd.teacher import Teacher
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


@functools.cache
def _model(widths):
    return make_model("resnet8", (8, 8, 3), 5, widths=widths)  # one instance: init compiles once


def _teacher(seed, widths=(2, 2, 4, 4)):
    model = _model(widths)
    return Teacher(model, *model.init(jax.random.key(seed)))


def _data(mean=(0.5, 0.4, 0.3)):
    x = np.zeros((4, 8, 8, 3), np.uint8)
    y = np.arange(4, dtype=np.int32) % 5
    return Dataset("tiny", x, y, x, y, num_classes=5, mean=mean, std=(0.2, 0.2, 0.2))


def test_teacher_saved_and_loaded_by_path_gives_bitwise_logits(tmp_path):
    teacher, data = _teacher(0), _data()
    path = str(tmp_path / "teacher")
    cifar_kd._save_teacher(path, teacher, data)
    back = cifar_kd._load_teacher(path, teacher.model, data)
    x = jax.random.normal(jax.random.key(3), (6, 8, 8, 3))
    a, fa = teacher.apply(teacher.inputs, x)
    b, fb = back.apply(back.inputs, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(fa["stage3"]), np.asarray(fb["stage3"]))
    assert back.content_hash() == teacher.content_hash()
    # Saving again over our own saved teacher replaces it; over anything else it refuses.
    cifar_kd._save_teacher(path, _teacher(1), data)
    other = tmp_path / "user_dir"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a saved teacher"):
        cifar_kd._save_teacher(str(other), teacher, data)
    assert (other / "notes.txt").read_text() == "mine"


def test_changed_teacher_file_is_refused(tmp_path):
    data = _data()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    cifar_kd._save_teacher(a, _teacher(0), data)
    cifar_kd._save_teacher(b, _teacher(1), data)
    # Replace a's arrays by b's: readable, same shapes, different content than a's recorded hash.
    shutil.rmtree(os.path.join(a, "arrays"))
    shutil.copytree(os.path.join(b, "arrays"), os.path.join(a, "arrays"))
    with pytest.raises(ConfigError, match="content hash"):
        cifar_kd._load_teacher(a, _teacher(0).model, data)
    # A teacher from other data (other normalisation) or of another architecture is refused too.
    with pytest.raises(ConfigError, match="normalises inputs differently"):
        cifar_kd._load_teacher(b, _teacher(0).model, _data(mean=(0.1, 0.1, 0.1)))
    with pytest.raises(ConfigError, match="not the pair's"):
        cifar_kd._load_teacher(b, _teacher(0, widths=(4, 4, 4, 4)).model, data)
    meta = json.loads((tmp_path / "b" / "ensemble.json").read_text())
    assert len(meta["content_hash"]) == 64
