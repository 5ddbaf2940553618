"""Experiment registry: the one place experiments are listed.

Each entry is a module with ``Config``, ``PRESETS`` and ``run``; its docstring
gives the command, the expected runtime and what the result shows.
"""

from __future__ import annotations

import importlib

from jaxkd.errors import check_name

EXPERIMENTS = {
    "backdoor_kd": "experiments.backdoor_kd",
    "cifar_kd": "experiments.cifar_kd",
    "confusion_distillation": "experiments.confusion_distillation",
    "digits_kd": "experiments.digits_kd",
    "digits_methods": "experiments.digits_methods",
    "functional_kd": "experiments.functional_kd",
    "interaction_tensor": "experiments.interaction_tensor",
    "kd_scaling": "experiments.kd_scaling",
    "spectral_kd": "experiments.spectral_kd",
    "spectral_w2s": "experiments.spectral_w2s",
}


def get(name: str):
    """Import and return the experiment module registered as ``name``."""
    check_name("experiment", name, EXPERIMENTS)
    return importlib.import_module(EXPERIMENTS[name])
