"""Tidy result records, summaries over seeds, environment stamps, safe writing.

A record is one row ``(condition, seed, step, metric, value)``. Results are
written to a staging directory and moved into place only when complete, so
a failed run never leaves a half-overwritten result directory.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import platform

import numpy as np

from jaxkd import stats
from jaxkd.selection import lower_is_better

RECORD_FIELDS = ("condition", "seed", "step", "metric", "value", "diverged")

# Metrics that are fractions: their intervals are clipped to [0, 1] (stats.summarize says when).
_UNIT_INTERVAL = ("/acc", "/agreement")


def bounds_of(metric: str) -> tuple[float, float] | None:
    """The range a metric can take, where it has one: accuracies and agreements lie in [0, 1]."""
    return (0.0, 1.0) if metric.endswith(_UNIT_INTERVAL) else None


def records_from_sweep(result, conditions: list[str]) -> list[dict]:
    """One row per seed × condition × metric × evaluation step."""
    rows = []
    for metric, values in sorted(result.history.items()):
        for s in range(values.shape[0]):
            for g, cond in enumerate(conditions):
                for e, step in enumerate(result.steps):
                    rows.append(
                        {
                            "condition": cond,
                            "seed": s,
                            "step": int(step),
                            "metric": metric,
                            "value": float(values[s, g, e]),
                            "diverged": bool(result.diverged[s, g]),
                        }
                    )
    return rows


def summarize_sweep(result, conditions: list[str], *, level: float = 0.95) -> dict:
    """``{condition: {metric: {"last", "selected", "max_over_evals"}}}`` over seeds.

    ``last`` summarises the final evaluation; ``selected`` the evaluation
    each run selected on the validation split inside the compiled run
    (:mod:`jaxkd.selection`; the model that is kept); ``max_over_evals`` the
    per-seed maximum (minimum for losses) over all evaluations, which is
    optimistic for test metrics and kept only to compare with peers that
    report it (RepDistiller's ``best_acc``). Diverged seeds are excluded,
    counted in ``n_diverged`` and listed in ``diverged_seeds`` with the step
    each diverged at in ``diverged_steps``.
    """
    pick = result.selected_index
    select = result.fingerprint["config"]["eval"]["select"] if result.fingerprint else None
    steps_at = getattr(result, "diverged_step", None)
    steps_at = np.zeros(result.diverged.shape, int) if steps_at is None else steps_at
    out = {}
    for g, cond in enumerate(conditions):
        ok = ~result.diverged[:, g]
        per = {
            "n_seeds": int(result.n_seeds),
            "n_diverged": int((~ok).sum()),
            "diverged_seeds": [int(s) for s in np.flatnonzero(~ok)],
            # the step each stopped at inside the compiled run (0: only an evaluation was NaN/Inf)
            "diverged_steps": [int(steps_at[s, g]) for s in np.flatnonzero(~ok)],
            "hparams": {k: float(v[g]) for k, v in result.grid.items()},
            "selected_by": select,
            "selected_steps": [int(result.steps[i]) for i in pick[ok, g]],
        }
        for metric, values in sorted(result.history.items()):
            v = values[ok, g, :]
            lower = lower_is_better(metric)
            extreme = v.min(axis=-1) if lower else v.max(axis=-1)
            at_pick = v[np.arange(len(v)), pick[ok, g]]
            b = bounds_of(metric)
            per[metric] = {
                "last": stats.summarize(v[:, -1], level=level, bounds=b),
                "selected": stats.summarize(at_pick, level=level, bounds=b),
                "max_over_evals": stats.summarize(extreme, level=level, bounds=b),
            }
        out[cond] = per
    return out


def emit_json(result: dict, out: str | None, *, print_always: bool = True) -> None:
    """A benchmark's JSON: printed, and written to ``out`` (parent folders created) when given."""

    def fallback(x):
        try:
            return float(x)
        except (TypeError, ValueError):
            return str(x)

    text = json.dumps(result, indent=2, default=fallback)
    if print_always or not out:
        print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")


def env_stamp() -> dict:
    """Versions, devices, host and git commit, for reproducibility."""
    import importlib

    import jax

    from jaxkd.fingerprint import git_commit
    from jaxkd.models.layers import direct_conv_enabled, fence_conv_inputs, winograd_enabled, winograd_maps
    from jaxkd.program import default_compiler_options

    def version(mod):
        try:
            return importlib.import_module(mod).__version__
        except Exception:
            return None

    return {
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {m: version(m) for m in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "scipy")},
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "git_commit": git_commit(),
        # XLA's persistent compilation cache (None: every program was compiled afresh)
        "compilation_cache": jax.config.jax_compilation_cache_dir if jax.config.jax_enable_compilation_cache else None,
        # the XLA compile options of the sweeps' training programs on this backend (SweepProgram's "auto")
        "compiler_options": default_compiler_options(),
        # whether differentiated convolutions fence their input (jaxkd.models.layers._fence; CPU only)
        "conv_input_fence": fence_conv_inputs(),
        # whether 3x3 convolutions on small maps may run as Winograd F(2x2, 3x3), or F(4x4, 3x3) under
        # jaxkd.models.layers.WINOGRAD_TILE = 4 (jaxkd.models.layers.use_winograd)
        "conv_winograd": winograd_enabled(),
        # the maps it takes (jaxkd.models.layers.winograd_maps; None where it is off)
        "conv_winograd_maps": winograd_maps(),
        # whether few-channel convolutions run as fused multiply-adds (jaxkd.models.layers.use_direct; CPU only)
        "conv_direct": direct_conv_enabled(),
    }


def records_csv(rows: list[dict]) -> str:
    """CSV of record rows; columns an experiment adds (e.g. ``pair``) come first."""
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in RECORD_FIELDS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=extra + list(RECORD_FIELDS))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _strict(obj):
    """NaN/Inf -> None (JSON has no NaN), numpy -> Python, recursively."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def to_json(obj) -> str:
    """Strict JSON (undefined values as ``null``), readable by jq and pandas."""
    return json.dumps(_strict(obj), indent=2, sort_keys=False, allow_nan=False)


def frame(rows: list[dict]):
    """Record rows as a pandas DataFrame (columns as in ``records.csv``)."""
    import pandas as pd

    extra = list(dict.fromkeys(k for r in rows for k in r if k not in RECORD_FIELDS))
    return pd.DataFrame(rows, columns=extra + list(RECORD_FIELDS))


def load(directory: str):
    """A finished run's ``records.csv`` as a pandas DataFrame, its summary and config in ``.attrs``.

    Works for every experiment and for a :mod:`jaxkd.study` (one row per
    condition × seed × metric × evaluation; a study's ``selected`` column
    marks each run's validation-selected evaluation). ``df.attrs["summary"]``
    and ``df.attrs["config"]`` hold the parsed ``summary.json`` and
    ``config.json``. A directory that is not a finished run is one line.
    """
    import pandas as pd

    from jaxkd.errors import ConfigError
    from jaxkd.report import load_run

    summary = load_run(directory)  # one-line errors for a missing or unfinished run
    root = os.path.abspath(os.path.expanduser(directory))
    path = os.path.join(root, "records.csv")
    if not os.path.isfile(path):
        raise ConfigError(f"{root} has a summary.json but no records.csv; rerun the experiment to rewrite it")
    df = pd.read_csv(path)
    for column in ("diverged", "selected"):
        if column in df and df[column].dtype == object:
            df[column] = df[column].map({"True": True, "False": False, True: True, False: False})
    config_path = os.path.join(root, "config.json")
    config = None
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f)
    df.attrs["summary"] = summary
    df.attrs["config"] = config
    df.attrs["run"] = root
    return df
