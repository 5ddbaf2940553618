"""``SweepProgram(compiler_options=...)``, on CPU by default YNNPACK fusions off: the options reach the compiled
sweep, change its results by round-off at most, and are part of the sweep's fingerprint (benchmarks/RESULTS.md)."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.checkpoint import mismatch
from jaxkd.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from jaxkd.data import load_dataset
from jaxkd.models import layers
from jaxkd.models.layers import direct_convolutions
from jaxkd.program import SweepProgram
from jaxkd.recipes import RecipeConfig
from jaxkd.results import env_stamp
from jaxkd.sweep import run_sweep, sweep_fingerprint
from jaxkd.train import make_train

NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}  # XLA's own kernels instead of jaxlib's YNNPACK fusions

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU compile option")


def test_options_reach_the_program_change_only_round_off_and_enter_the_fingerprint(tmp_path, monkeypatch):
    config = RunConfig(
        ModelConfig("cnn2d", (4, 8)),
        recipe=RecipeConfig(learning_rate=1e-2, steps=10, batch_size=32),
        data=DataConfig("digits", crop_padding=0),
        eval=EvalConfig(every=10),
    )
    trainer = make_train(config, load_dataset("digits"))
    plain, ours = SweepProgram(trainer, 2, compiler_options=None), SweepProgram(trainer, 2)  # XLA's, "auto"
    assert ours.compiler_options == NO_YNN == env_stamp()["compiler_options"]  # the CPU default, recorded
    text = {p: p.compiled_advance(10).as_text() for p in (plain, ours)}
    if "__ynn_fusion" in text[plain]:  # jaxlib 0.10's default for the dense layer: the option must remove it
        assert "__ynn_fusion" not in text[ours]
    key = jax.random.key(0)
    r1 = run_sweep(trainer, key, 2, compiler_options=None, progress=False)
    r2 = run_sweep(trainer, key, 2, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    np.testing.assert_allclose(r1.history["train/loss"], r2.history["train/loss"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(r1.states.params), jax.tree.leaves(r2.states.params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)
    saved = json.loads((tmp_path / "ck" / "fingerprint.json").read_text())
    assert saved["compiler_options"] == NO_YNN  # what a resume is checked against
    f_plain, f_ours = (sweep_fingerprint(p, key, 10, None, None) for p in (plain, ours))
    assert "compiler_options" not in f_plain  # XLA's defaults: the fingerprint of checkpoints before the option
    assert f_ours["compiler_options"] == NO_YNN
    # The CPU convolution's choices too (on by default here): a checkpoint resumes only under the same ones.
    maps = "3x3 stride 1, <= 256 positions, >= 128 channels"
    paths = {"conv_input_fence": True, "conv_winograd": True, "conv_winograd_maps": maps, "conv_direct": True}
    assert f_ours["conv_paths"] == paths == saved["conv_paths"]
    with monkeypatch.context() as m:  # Winograd's rule before 2026-12-07 (fewer maps): another program's round-off
        m.setattr(layers, "WINOGRAD_MIN_CHANNELS", 256)
        f_old = sweep_fingerprint(ours, key, 10, None, None)
    assert mismatch(f_ours, f_old, "ckpt").startswith("resuming needs the same conv_paths")
    with monkeypatch.context() as m:  # F(4x4, 3x3) where the map divides: another program's round-off
        m.setattr(layers, "WINOGRAD_TILE", 4)
        f_f4 = sweep_fingerprint(ours, key, 10, None, None)
    assert f_f4["conv_paths"]["conv_winograd_maps"].endswith("F(4x4) where the map divides, else F(2x2)")
    assert mismatch(f_ours, f_f4, "ckpt").startswith("resuming needs the same conv_paths")
    msg = mismatch(f_ours, dict(f_ours, conv_paths={"conv_input_fence": True}), "ckpt")
    assert msg.startswith("resuming needs the same conv_paths") and "intact" in msg
    with direct_convolutions(False):  # a run that turns one off (cifar_kd's --set direct_conv=false) is told apart
        f_xla = sweep_fingerprint(ours, key, 10, None, None)
    assert f_xla["conv_paths"] == {"conv_input_fence": True, "conv_winograd": True, "conv_winograd_maps": maps}
    assert mismatch(f_ours, f_xla, "ckpt").startswith("resuming needs the same conv_paths")
    msg = mismatch(f_ours, dict(f_ours, compiler_options={}), "ckpt")
    assert msg.startswith("resuming needs the same compiler_options") and "intact" in msg


def _fusions_recomputing_a_relu_in_a_transpose(hlo_text: str) -> int:
    """Fusions whose fused computation both moves data across dimensions (a ``transpose`` or a layout-changing
    ``copy``) and takes a ``maximum`` (a ReLU)."""
    bodies = {block.split(" ", 1)[0].lstrip("%"): block for block in re.split(r"\n(?=%|ENTRY)", hlo_text)}
    called = re.findall(r"fusion\(.*?calls=%([\w.\-]+)", hlo_text)  # any fusion, multi-output ones included
    moves = (" transpose(", " copy(")
    return sum(
        1 for name in called if any(m in bodies.get(name, "") for m in moves) and " maximum(" in bodies.get(name, "")
    )


def test_conv_input_fence_keeps_values_and_stops_xla_recomputing_relus_in_weight_gradients(monkeypatch):
    from jaxkd.models import layers, make_model

    # The fence is the identity on normal finite values, bit for bit (signed zero included; XLA:CPU flushes
    # subnormals to zero here as everywhere).
    x = np.array([0.0, -0.0, 1.5, -2.25, 3e38, -1e-30, 7.0], np.float32)
    assert np.array_equal(np.asarray(jax.jit(layers._fence)(x)).view(np.uint32), x.view(np.uint32))
    assert env_stamp()["conv_input_fence"] is True  # on by default on CPU, and recorded
    model = make_model("resnet8", (16, 16, 3), 10, (4, 4, 8, 16))
    params, rest = model.init(jax.random.key(0))
    images = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
    labels = jnp.arange(8) % 10

    def loss(p, r):
        logits, _, new_rest = model.apply(p, r, images, train=True)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)), new_rest

    grads, bad = {}, {}
    for fence in (True, False):
        monkeypatch.setattr(layers, "CONV_INPUT_FENCE", fence)
        compiled = jax.jit(jax.grad(loss, has_aux=True)).lower(params, rest).compile(NO_YNN)
        grads[fence], bad[fence] = (
            compiled(params, rest)[0],
            _fusions_recomputing_a_relu_in_a_transpose(compiled.as_text()),
        )
    # Without the fence XLA recomputes BatchNorm + ReLU inside the transposed copies the weight gradients read
    # (the premise; if a future XLA stops doing that, the fence is no longer needed); with it, never.
    assert bad[False] > 0 and bad[True] == 0
    for a, b in zip(jax.tree.leaves(grads[True]), jax.tree.leaves(grads[False])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
