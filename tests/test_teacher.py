"""Teachers on disk and their input normalisation: saved and loaded by path, refused for other data."""

import dataclasses
import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxkd.config import EvalConfig, ModelConfig, ObjectiveConfig, RecipeConfig, RunConfig
from jaxkd.data import Dataset
from jaxkd.ensemble import Ensemble
from jaxkd.errors import ConfigError
from jaxkd.models import make_model
from jaxkd.teacher import Teacher, load_teacher, save_teacher
from jaxkd.train import make_train


@functools.cache
def _model(widths):
    return make_model("resnet8", (8, 8, 3), 5, widths=widths)  # one instance: init compiles once


def _teacher(seed, widths=(2, 2, 4, 4), mean=(0.5, 0.4, 0.3)):
    model = _model(widths)
    return Teacher(model, *model.init(jax.random.key(seed)), mean=mean, std=(0.2, 0.2, 0.2), normalisation_known=True)


def _data(mean=(0.5, 0.4, 0.3), n=60):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    y = np.arange(n, dtype=np.int32) % 5
    return Dataset("tiny", x, y, x, y, num_classes=5, mean=mean, std=(0.2, 0.2, 0.2))


def test_teacher_saved_and_loaded_by_path_gives_bitwise_logits(tmp_path):
    teacher = _teacher(0)
    path = str(tmp_path / "teacher")
    save_teacher(path, teacher)
    back = load_teacher(path, teacher.model)
    x = jax.random.normal(jax.random.key(3), (6, 8, 8, 3))
    a, fa = teacher.apply(teacher.inputs, x)
    b, fb = back.apply(back.inputs, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(fa["stage3"]), np.asarray(fb["stage3"]))
    assert (back.mean, back.std) == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    assert back.content_hash() == teacher.content_hash()
    # Replacing our own saved teacher is allowed when asked; a directory with anything else is refused.
    save_teacher(path, _teacher(1), replace=True)
    assert load_teacher(path).content_hash() == _teacher(1).content_hash()
    other = tmp_path / "user_dir"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        save_teacher(path, _teacher(2))  # our own teacher, but replacing was not asked for
    with pytest.raises(ConfigError, match="not a saved jaxkd ensemble"):
        save_teacher(str(other), teacher, replace=True)
    assert (other / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["teacher", "user_dir"]  # no staging or aside directory left


def test_changed_teacher_file_or_other_architecture_is_refused(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    save_teacher(a, _teacher(0))
    save_teacher(b, _teacher(1))
    # Replace a's arrays by b's: readable, same shapes, different content than a's recorded hash.
    shutil.rmtree(os.path.join(a, "arrays"))
    shutil.copytree(os.path.join(b, "arrays"), os.path.join(a, "arrays"))
    with pytest.raises(ConfigError, match="content hash"):
        load_teacher(a, _teacher(0).model)
    with pytest.raises(ConfigError, match="not the expected"):
        load_teacher(b, _teacher(0, widths=(4, 4, 4, 4)).model)
    meta = json.loads((tmp_path / "b" / "ensemble.json").read_text())
    assert meta["mean"] == [0.5, 0.4, 0.3]


def test_normalisation_is_part_of_the_teacher_and_checked_by_the_trainer():
    # Same weights, other normalisation: another teacher (hash), and refused for data normalised otherwise.
    t0, t1 = _teacher(0), _teacher(0, mean=(0.1, 0.1, 0.1))
    assert t0.content_hash() != t1.content_hash()
    cfg = RunConfig(
        model=ModelConfig("resnet8", (2, 2, 4, 4)),
        objective=ObjectiveConfig({"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}),
        recipe=RecipeConfig(batch_size=8, steps=2),
        eval=EvalConfig(every=2),
    )
    make_train(cfg, _data(), t0)  # matching normalisation: accepted
    with pytest.raises(ConfigError, match="normalised with mean"):
        make_train(cfg, _data(), t1)
    # "No normalisation" is a known normalisation too: refused for normalised data (it was skipped before).
    plain = dataclasses.replace(_teacher(0), mean=None, std=None)  # trained on un-normalised inputs
    with pytest.raises(ConfigError, match="normalised with mean None, std None"):
        make_train(cfg, _data(), plain)
    # from_ensemble keeps the ensemble's normalisation (it was dropped before).
    expand = lambda t: jax.tree.map(lambda v: np.asarray(v)[None], t)  # noqa: E731
    ens = Ensemble(t1.model, expand(t1.params), expand(t1.rest), [{"seed": 0}], mean=t1.mean, std=t1.std)
    with pytest.raises(ConfigError, match="normalised with mean"):
        make_train(cfg, _data(), Teacher.from_ensemble(ens))
