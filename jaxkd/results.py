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
import shutil
import subprocess
import tempfile

import numpy as np

from jaxkd import stats

RECORD_FIELDS = ("condition", "seed", "step", "metric", "value", "diverged")

# Metrics where smaller is better (for "best epoch" summaries).
_LOWER_IS_BETTER = ("loss", "ce", "kd", "risk")


def records_from_sweep(result, conditions: list[str]) -> list[dict]:
    """One row per seed × condition × metric × evaluation step."""
    rows = []
    for metric, values in sorted(result.history.items()):
        for s in range(values.shape[0]):
            for g, cond in enumerate(conditions):
                for e, step in enumerate(result.steps):
                    rows.append({"condition": cond, "seed": s, "step": int(step), "metric": metric,
                                 "value": float(values[s, g, e]), "diverged": bool(result.diverged[s, g])})
    return rows


def summarize_sweep(result, conditions: list[str], *, level: float = 0.95) -> dict:
    """``{condition: {metric: {"last": summary, "best": summary, "best_step": ...}}}``.

    ``last`` summarises the final evaluation over seeds; ``best`` the per-seed
    best evaluation (max, or min for losses). Diverged seeds are excluded and
    counted in ``n_diverged``.
    """
    out = {}
    for g, cond in enumerate(conditions):
        ok = ~result.diverged[:, g]
        per = {"n_seeds": int(result.n_seeds), "n_diverged": int((~ok).sum()),
               "diverged_seeds": [int(s) for s in np.flatnonzero(~ok)],
               "hparams": {k: float(v[g]) for k, v in result.grid.items()}}
        for metric, values in sorted(result.history.items()):
            v = values[ok, g, :]
            lower = any(metric.endswith(s) for s in _LOWER_IS_BETTER)
            best = v.min(axis=-1) if lower else v.max(axis=-1)
            mean_curve = v.mean(axis=0) if len(v) else np.full(v.shape[-1], np.nan)
            best_idx = int(np.nanargmin(mean_curve) if lower else np.nanargmax(mean_curve)) if len(v) else 0
            per[metric] = {"last": stats.summarize(v[:, -1], level=level),
                           "best": stats.summarize(best, level=level),
                           "best_mean_step": int(result.steps[best_idx])}
        out[cond] = per
    return out


def env_stamp() -> dict:
    """Versions, devices, host and git commit, for reproducibility."""
    import importlib

    import jax

    def version(mod):
        try:
            return importlib.import_module(mod).__version__
        except Exception:
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except Exception:
        commit = None
    return {
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {m: version(m) for m in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "scipy")},
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "git_commit": commit,
    }


def records_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RECORD_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_json(obj) -> str:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return json.dumps(obj, indent=2, sort_keys=False, default=default, allow_nan=True)


def check_writable(out_dir: str) -> None:
    """Fail early (ConfigError) unless ``out_dir`` can be created and written.

    Probes by creating the directory and a temporary file in it; existing
    files are left untouched.
    """
    from jaxkd.errors import ConfigError

    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"output path {out_dir} exists and is not a directory; choose another --out")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".probe-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"output directory {out_dir} is not writable ({err.strerror}); choose another --out"
        ) from None


def write_files(out_dir: str, files: dict[str, str | bytes]) -> None:
    """Write ``{relative_name: content}`` into ``out_dir`` all-or-nothing per file.

    Everything is first written into a staging directory beside ``out_dir``;
    only after all writes succeed are the files moved into place
    (``os.replace``), so an error never leaves a mix of old and new files.
    """
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=out_dir)
    try:
        for name, content in files.items():
            path = os.path.join(staging, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
        for name in files:
            dest = os.path.join(out_dir, name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(os.path.join(staging, name), dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
