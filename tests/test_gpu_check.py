"""The prepared GPU check (benchmarks/gpu_check.sh): shell syntax, its CPU dry run's JSON, its guards, its wheel list.

The dry run here is ``--tiny`` (the smallest sizes; the same code path and JSON keys as ``--dry-run``). Its
derived numbers are recomputed in NumPy from the seconds it recorded, independently of the script's arithmetic.
"""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SH = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
pytestmark = pytest.mark.xdist_group("gpu_check")  # one worker runs the dry run once for every test
PY = os.path.join(ROOT, "benchmarks", "gpu_check.py")
SECTIONS = ("device", "cnn_sweep_jax", "cnn_sweep_torch", "cifar_kd_paper")
VARIANTS = ("loop", "vmap", "map")
PREINSTALLED = {"jax", "flax", "optax", "orbax-checkpoint"}  # on the GPU machine; the rest come as wheels


def module():
    spec = importlib.util.spec_from_file_location("gpu_check", PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # no side effects at import: everything runs in main()
    return mod


def run_sh(*args, env=None, timeout=600):
    return subprocess.run(
        ["bash", SH, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_shell_syntax():
    r = subprocess.run(["bash", "-n", SH], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")  # session: a module fixture reruns when xdist interleaves other modules' tests
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "dry.json"
    r = run_sh("--tiny", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


def test_dry_run_sections_and_device(dry):
    assert dry["check"] == "gpu_check" and dry["dry_run"] is True and dry["complete"] is True
    assert set(dry["sections"]) == set(SECTIONS)
    for name, sec in dry["sections"].items():
        assert sec["status"] in ("ok", "skipped"), (name, sec.get("error"))
        assert sec["seconds"] >= 0 and sec["budget_s"] > 0
    dev = dry["sections"]["device"]
    assert dev["platform"] == "cpu" and dev["name"] and positive(dev["memory_bytes"])
    assert dev["nominal_peak_flops_per_s"] is None  # a CPU is not in the table
    for dtype in ("float32", "bfloat16"):
        m = dev["matmul"][dtype]
        assert positive(m["flops_per_s"]) and m["n"] > 0
    assert positive(dry["total_seconds"])


def check_rates(v, seeds, batch, f_step, tol=1e-9):
    """images/s, FLOP/s and the fraction of peak, recomputed from the recorded seconds."""
    sec = float(np.median(v["seconds_all"]))
    assert v["seconds_per_step"] == pytest.approx(sec, rel=tol)
    assert v["images_per_s"] == pytest.approx(seeds * batch / sec, rel=tol)
    assert v["flops_per_s"] == pytest.approx(seeds * f_step / sec, rel=tol)
    assert v["fraction_of_peak"] == pytest.approx(v["flops_per_s"] / v["peak_flops_per_s"], rel=tol)
    for key in ("seconds_per_step", "images_per_s", "flops_per_s", "fraction_of_peak", "peak_flops_per_s"):
        assert positive(v[key]), key
    assert v["peak_source"]
    assert v["first_step_losses_finite"] is True and len(v["first_step_losses"]) == seeds
    assert all(np.isfinite(v["first_step_losses"]))


def test_dry_run_cnn_sweep_jax(dry):
    sec = dry["sections"]["cnn_sweep_jax"]
    st = sec["settings"]
    seeds, batch = st["seeds"], st["batch"]
    assert (seeds, batch) == (dry["sizes"]["seeds"], dry["sizes"]["batch"])
    for dtype in ("float32", "bfloat16"):
        res = sec[dtype]
        assert res["status"] == "ok" and res["skipped"] == []
        f_step = res["flops_per_step_per_seed"]
        assert positive(f_step) and res["flops_per_image"] == pytest.approx(f_step / batch)
        assert set(res["variants"]) == set(VARIANTS)
        for name, v in res["variants"].items():
            check_rates(v, seeds, batch, f_step)
            assert positive(v["compile_s"]) and positive(v["memory_per_seed_bytes"]), name
            mem = v["memory"]
            program_seeds = 1 if name == "loop" else seeds
            assert v["memory_per_seed_bytes"] == pytest.approx(
                (mem["temp"] + mem["argument"] + mem["output"]) / program_seeds
            )
        ips = {n: v["images_per_s"] for n, v in res["variants"].items()}
        assert res["speedups"]["vmap_over_loop"] == pytest.approx(ips["vmap"] / ips["loop"])
    # The same seeds' first-step losses whichever way the seeds are run (float32 round-off).
    losses = [sec["float32"]["variants"][n]["first_step_losses"] for n in VARIANTS]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    np.testing.assert_allclose(losses[2], losses[0], rtol=1e-4)


def test_dry_run_torch(dry):
    sec = dry["sections"]["cnn_sweep_torch"]
    try:
        import torch  # noqa: F401
    except ImportError:
        assert sec["status"] == "skipped" and "not installed" in sec["reason"]
        return
    f_step = dry["sections"]["cnn_sweep_jax"]["float32"]["flops_per_step_per_seed"]
    for dtype in ("float32", "bfloat16"):
        check_rates(sec[dtype], sec["seeds"], dry["sizes"]["batch"], f_step)


def test_dry_run_paper_epoch_and_projection(dry):
    sec = dry["sections"]["cifar_kd_paper"]
    assert sec["batch"] == 64 and sec["epochs"] == 240  # the paper recipe
    for role, runs in (("students", sec["seeds"] * len(sec["methods"])), ("teacher", 1)):
        r = sec[role]
        assert r["runs"] == runs and r["first_call_losses_finite"] is True
        calls = np.asarray(r["calls_s"])
        assert len(calls) >= 2 and r["steps_timed"] == len(calls) * r["chunk_steps"]
        assert r["steps_per_epoch"] % r["chunk_steps"] == 0
        step = np.median(calls[1:]) / r["chunk_steps"]
        assert r["seconds_per_step"] == pytest.approx(step)
        assert r["epoch_s"] == pytest.approx(calls.sum() + (r["steps_per_epoch"] - r["steps_timed"]) * step)
        assert r["epoch_measured_fully"] == (r["steps_timed"] >= r["steps_per_epoch"])
        for key in ("compile_s", "memory_bytes", "images_per_s", "program_flops_per_step"):
            assert positive(r[key]), (role, key)
    p = sec["projection"]
    steps = sec["total_steps"]
    assert steps == 240 * sec["students"]["steps_per_epoch"]
    pair = steps * (sec["students"]["seconds_per_step"] + sec["teacher"]["seconds_per_step"])
    assert p["pair_s"] == pytest.approx(pair)
    assert p["full_run_s"] == pytest.approx(len(sec["pairs_in_preset"]) * pair)
    assert positive(p["full_run_hours"]) and "not included" in p["what"]


@pytest.mark.parametrize(
    "name, entry, bf16",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4e12),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", "H100 NVL", 835.5e12),
        ("NVIDIA H200", "H200 SXM", 989.4e12),
        ("NVIDIA GH200 480GB", "GH200 (H100 SXM compute)", 989.4e12),
        ("NVIDIA A100-SXM4-80GB", "A100", 312e12),
        ("NVIDIA L4", "L4", 121e12),
        ("NVIDIA L40S", "L40S", 362e12),
    ],
)
def test_nominal_peak_by_device_name(name, entry, bf16):
    found, peaks = module().nominal_peaks(name)
    assert found == entry and peaks["bf16"] == bf16


@pytest.mark.parametrize("name", ["cpu", "NVIDIA A10G", "TPU v5 lite"])
def test_unknown_device_has_no_nominal_peak(name):
    assert module().nominal_peaks(name) is None


def test_cut_short_by_the_shell_limit_marks_the_json(tmp_path):
    out = tmp_path / "cut.json"
    r = run_sh("--tiny", "--sections", "device", "--out", str(out), env={"GPU_CHECK_LIMIT": "1"}, timeout=120)
    assert r.returncode in (124, 137), r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["complete"] is False and "GPU_CHECK_LIMIT" in result["cut_short"]


def test_bad_section_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, PY, "--tiny", "--sections", "device,gpu", "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "unknown section(s) gpu" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.json").exists()


def requirement_names(lines):
    return {re.split(r"[<>=\[; ]", x.strip(), maxsplit=1)[0].lower().replace("_", "-") for x in lines}


def test_wheel_list_matches_pyproject_and_docs():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    with open(os.path.join(ROOT, "benchmarks", "gpu_check_requirements.txt")) as f:
        listed = [x for x in f if x.strip() and not x.startswith("#")]
    assert requirement_names(listed) == requirement_names(deps) - PREINSTALLED
    assert sorted(x.strip() for x in listed) == sorted(d for d in deps if requirement_names([d]) - PREINSTALLED)
    with open(os.path.join(ROOT, "docs", "gpu_check.md")) as f:
        doc = f.read()
    assert "pip download" in doc and "--no-index --find-links" in doc
    for name in requirement_names(listed):
        assert name in doc.lower().replace("_", "-"), name
