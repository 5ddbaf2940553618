"""Experiment registry: the one place experiments are listed.

Each entry is a module with ``Config``, ``PRESETS`` and ``run``; its docstring
gives the command, the expected runtime and what the result shows. Names and
one-line summaries are known without importing the modules (which import
JAX), so ``jaxkd list`` and an unknown name answer at once.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util

from jaxkd.errors import check_name

EXPERIMENTS = {
    "backdoor_kd": "experiments.backdoor_kd",
    "cifar_kd": "experiments.cifar_kd",
    "confusion_distillation": "experiments.confusion_distillation",
    "digits_kd": "experiments.digits_kd",
    "digits_methods": "experiments.digits_methods",
    "explanations": "experiments.explanations",
    "functional_kd": "experiments.functional_kd",
    "interaction_tensor": "experiments.interaction_tensor",
    "kd_scaling": "experiments.kd_scaling",
    "spectral_kd": "experiments.spectral_kd",
    "spectral_w2s": "experiments.spectral_w2s",
    "subdistill": "experiments.subdistill",
}


def check(name: str) -> None:
    """One-line ConfigError unless ``name`` is a registered experiment (imports nothing)."""
    check_name("experiment", name, EXPERIMENTS)


def get(name: str):
    """Import and return the experiment module registered as ``name``."""
    check(name)
    return importlib.import_module(EXPERIMENTS[name])


def summary(name: str) -> str:
    """The first line of the experiment's docstring, read from its source without importing it."""
    check(name)
    spec = importlib.util.find_spec(EXPERIMENTS[name])
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
