"""``jaxkd theory risk CONFIG.json``: exact risks for one configuration, as JSON.

CONFIG keys (all required unless noted):

* ``theta_star``: list of D floats; ``sigma2``: noise variance >= 0;
* ``lam_teacher``, ``lam_student``: lists of D floats >= 0;
* ``alpha``: label mixing in [0, 1] (1 = pure distillation);
* ``teacher``, ``student``: objects with ``gamma0``, ``schedule``
  (``"constant"`` | ``"step_decay"``), ``K`` (step decay only, optional:
  default ``steps / log2 steps``), ``batch``, ``steps``;
* ``features`` (optional): ``"gaussian"`` (default) or ``"rademacher"``.

The direct student uses the student spectrum with the teacher's SGD. Output:
``teacher_excess_risk``, ``direct_student_excess_risk``,
``distilled_student_excess_risk`` (expected values of E[(f - f*)²], no ½,
computed exactly), plus ``DER`` and ``PGR``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from jaxkd.errors import ConfigError
from theory.exact import SGD
from theory.transfer import Transfer, transfer_curves

TOP_KEYS = {"theta_star", "sigma2", "lam_teacher", "lam_student", "alpha", "teacher", "student", "features"}
SGD_KEYS = {"gamma0", "schedule", "K", "batch", "steps"}
KAPPA = {"gaussian": 3.0, "rademacher": 1.0}


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _vector(cfg, key, D=None, nonneg=False):
    v = cfg[key]
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{key} must be a non-empty list of numbers")
    arr = np.array([_number(x, f"{key}[{i}]") for i, x in enumerate(v)], np.float64)
    if D is not None and len(arr) != D:
        raise ConfigError(f"{key} has length {len(arr)} but theta_star has length {D}; give all vectors length D")
    if nonneg and np.any(arr < 0):
        first = int(np.argmax(arr < 0))
        raise ConfigError(f"{key} has negative entries (first at index {first}); spectra must be >= 0")
    return arr


def _sgd(cfg, who) -> SGD:
    obj = cfg[who]
    if not isinstance(obj, dict):
        raise ConfigError(f"{who} must be an object with keys {sorted(SGD_KEYS)}")
    unknown = set(obj) - SGD_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {who}; allowed: {sorted(SGD_KEYS)}")
    missing = {"gamma0", "schedule", "batch", "steps"} - set(obj)
    if missing:
        raise ConfigError(f"{who} is missing {sorted(missing)}")
    for k in ("batch", "steps"):
        if not isinstance(obj[k], int) or isinstance(obj[k], bool) or obj[k] < 1:
            raise ConfigError(f"{who}.{k} must be a positive integer, got {obj[k]!r}")
    K = obj.get("K")
    return SGD(gamma0=_number(obj["gamma0"], f"{who}.gamma0"), steps=obj["steps"], batch=obj["batch"],
               schedule=obj["schedule"], K=None if K is None else _number(K, f"{who}.K"))


def parse(cfg: dict) -> Transfer:
    """Validate a CONFIG dict and build the :class:`Transfer` problem."""
    if not isinstance(cfg, dict):
        raise ConfigError("the configuration must be a JSON object")
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    missing = TOP_KEYS - {"features"} - set(cfg)
    if missing:
        raise ConfigError(f"missing key(s) {sorted(missing)}")
    theta = _vector(cfg, "theta_star")
    D = len(theta)
    sigma2 = _number(cfg["sigma2"], "sigma2")
    if sigma2 < 0:
        raise ConfigError(f"sigma2 must be >= 0, got {sigma2}")
    alpha = _number(cfg["alpha"], "alpha")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must lie in [0, 1], got {alpha}")
    features = cfg.get("features", "gaussian")
    if features not in KAPPA:
        raise ConfigError(f"features must be one of {sorted(KAPPA)}, got {features!r}")
    return Transfer(
        lam_T=_vector(cfg, "lam_teacher", D, nonneg=True), lam_S=_vector(cfg, "lam_student", D, nonneg=True),
        theta_sq=theta**2, sigma2=sigma2, alpha=alpha, teacher=_sgd(cfg, "teacher"), student=_sgd(cfg, "student"),
        kappa=KAPPA[features],
    )


def risk(cfg: dict) -> dict:
    """Exact final excess risks for a CONFIG dict."""
    p = parse(cfg)
    out = transfer_curves(p, checkpoints_T=[p.teacher.steps], checkpoints_S=[p.student.steps])
    return {
        "teacher_excess_risk": out["teacher_final"],
        "direct_student_excess_risk": out["direct_final"],
        "distilled_student_excess_risk": out["distilled_final"],
        "DER": out["DER"],
        "PGR": out["PGR"],
    }


def risk_from_file(path: str) -> dict:
    try:
        with open(path) as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    return risk(cfg)
