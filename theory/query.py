"""``jaxkd theory risk CONFIG.json``: exact risks for one configuration, as JSON.

The keys of CONFIG and their meaning are in :data:`KEYS` and :data:`SGD_KEYS`
(printed by ``jaxkd theory risk --help``, see :data:`EPILOG`); the output's
keys are in :data:`OUTPUT`. The direct student uses the student spectrum with
the teacher's SGD. Risks are expected values computed exactly (no Monte
Carlo), without the paper's ½, in two conventions
(:data:`theory.transfer.CONVENTIONS`).

This module imports JAX only when a risk is computed, so the CLI can print
the help text cheaply.
"""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np

from jaxkd.errors import ConfigError

KEYS = {
    "theta_star": "list of D numbers: the target f*(z) = <theta_star, z>, z ~ N(0, I_D); D is the problem's "
    "dimension and every vector below has length D",
    "sigma2": "label-noise variance (>= 0): y = f*(z) + noise",
    "lam_teacher": "list of D numbers >= 0: the teacher's feature spectrum, features sqrt(lam) * z; a 0 is a "
    "direction the teacher cannot see",
    "lam_student": "list of D numbers >= 0: the student's spectrum (zeros make a rank-deficient student)",
    "alpha": "label mixing of the distilled student in [0, 1]: it trains on alpha * f_teacher(z) + (1 - alpha) * y; "
    "1 = pure distillation, 0 = true labels only",
    "teacher": "object with the SGD keys below: the teacher's one-pass SGD from zero on true labels (the direct "
    "student runs the same SGD on the student spectrum)",
    "student": "object with the SGD keys below: the distilled student's SGD on fresh teacher-labelled inputs",
    "features": 'optional: "gaussian" (default) or "rademacher" feature coordinates',
}
SGD_KEYS = {
    "gamma0": "initial step size (> 0; a step size that makes SGD diverge is refused with the largest stable one)",
    "schedule": '"constant"; "step_decay", the theory\'s gamma0 * 2^-floor(t/K); or "flat_then_decay", the paper\'s '
    "experiments: gamma0 for t <= steps/2, then halving every K steps",
    "K": "optional: the decay interval in steps (the step size halves every K steps), not a number of decays; "
    "default steps/log2(steps) for step_decay, ln(steps/2) for flat_then_decay",
    "batch": "batch size (positive integer; each step sees batch fresh samples)",
    "steps": "number of SGD steps (positive integer)",
}
REQUIRED = ("theta_star", "sigma2", "lam_teacher", "lam_student", "alpha", "teacher", "student")
SGD_REQUIRED = ("gamma0", "schedule", "batch", "steps")
KAPPA = {"gaussian": 3.0, "rademacher": 1.0}
OUTPUT = {
    "teacher_excess_risk, direct_student_excess_risk, distilled_student_excess_risk": "excess risks over f*",
    "DER": "direct / distilled excess risk over f* (> 1: distillation amplifies data)",
    "teacher_excess_over_best, direct_student_excess_over_best, distilled_student_excess_over_best": (
        "the paper's excess risks (over the best in class / best transfer solution)"
    ),
    "DER_over_best": "the paper's DER_N = E_S / E_T2S (Theorem 2 is about this one)",
    "best_in_class_risk": "risks over f* of the reference solutions (0 for full-rank models)",
    "PGR": "performance gap recovered (R_T - R_T2S) / (R_T - R_S); null unless the direct student beats the "
    "teacher by at least 1% (weak-to-strong), with PGR_note saying why",
    "conventions": "what each kind of excess risk means",
}
DESCRIPTION = textwrap.fill(
    "Print, as JSON, the exact expected excess risks (no 1/2 factor) of the teacher, the direct student and the "
    "distilled student for CONFIG.json, over f* and in the paper's convention (over the best model in each class).",
    100,
)


def _help_block(title: str, keys: dict, width: int = 100) -> str:
    """``title`` and one wrapped, indented entry per key (for argparse's raw epilog)."""
    col = max(len(k) for k in keys) + 4
    lines = [title]
    for k, v in keys.items():
        if col <= 20:
            lines += textwrap.wrap(v, width, initial_indent=f"  {k:<{col - 2}}", subsequent_indent=" " * col)
        else:
            lines += [f"  {k}", *textwrap.wrap(v, width, initial_indent=" " * 6, subsequent_indent=" " * 6)]
    return "\n".join(lines)


EPILOG = "\n\n".join(
    [
        _help_block("CONFIG keys (all required unless optional):", KEYS),
        _help_block('SGD keys (inside "teacher" and "student"):', SGD_KEYS),
        _help_block("output keys:", OUTPUT),
    ]
)


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


def _sgd(cfg, who):
    from theory.exact import SGD

    obj = cfg[who]
    if not isinstance(obj, dict):
        raise ConfigError(f"{who} must be an object with keys {sorted(SGD_KEYS)}")
    unknown = set(obj) - set(SGD_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {who}; allowed: {sorted(SGD_KEYS)}")
    missing = set(SGD_REQUIRED) - set(obj)
    if missing:
        raise ConfigError(f"{who} is missing {sorted(missing)}")
    for k in ("batch", "steps"):
        if not isinstance(obj[k], int) or isinstance(obj[k], bool) or obj[k] < 1:
            raise ConfigError(f"{who}.{k} must be a positive integer, got {obj[k]!r}")
    K = obj.get("K")
    return SGD(
        gamma0=_number(obj["gamma0"], f"{who}.gamma0"),
        steps=obj["steps"],
        batch=obj["batch"],
        schedule=obj["schedule"],
        K=None if K is None else _number(K, f"{who}.K"),
    )


def parse(cfg: dict):
    """Validate a CONFIG dict and build the :class:`theory.transfer.Transfer` problem."""
    from theory.transfer import Transfer

    if not isinstance(cfg, dict):
        raise ConfigError("the configuration must be a JSON object")
    unknown = set(cfg) - set(KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(KEYS)}")
    missing = set(REQUIRED) - set(cfg)
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
        lam_T=_vector(cfg, "lam_teacher", D, nonneg=True),
        lam_S=_vector(cfg, "lam_student", D, nonneg=True),
        theta_sq=theta**2,
        sigma2=sigma2,
        alpha=alpha,
        teacher=_sgd(cfg, "teacher"),
        student=_sgd(cfg, "student"),
        kappa=KAPPA[features],
    )


def _finite_or_none(x: float):
    return float(x) if math.isfinite(x) else None


def risk(cfg: dict) -> dict:
    """Exact final excess risks for a CONFIG dict (keys in :data:`OUTPUT`); strict JSON (no NaN)."""
    from theory.transfer import CONVENTIONS, transfer_curves

    p = parse(cfg)
    out = transfer_curves(p, checkpoints_T=[p.teacher.steps], checkpoints_S=[p.student.steps])
    best = out["best_in_class"]
    result = {
        "teacher_excess_risk": out["teacher_final"],
        "direct_student_excess_risk": out["direct_final"],
        "distilled_student_excess_risk": out["distilled_final"],
        "DER": _finite_or_none(out["DER"]),
        "teacher_excess_over_best": out["teacher_final_over_best"],
        "direct_student_excess_over_best": out["direct_final_over_best"],
        "distilled_student_excess_over_best": out["distilled_final_over_best"],
        "DER_over_best": _finite_or_none(out["DER_over_best"]),
        "best_in_class_risk": {
            "teacher": best["teacher"],
            "direct_student": best["direct"],
            "distilled_student": best["distilled"],
        },
        "PGR": _finite_or_none(out["PGR"]),
    }
    if out["PGR_note"] is not None:
        result["PGR_note"] = out["PGR_note"]
    result["conventions"] = {"excess_risk": CONVENTIONS["over_f_star"], "excess_over_best": CONVENTIONS["over_best"]}
    return result


def risk_from_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; give the path of a JSON file") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give the path of a JSON file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path} ({err.strerror}); give a readable JSON file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8); give a JSON file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    return risk(cfg)
