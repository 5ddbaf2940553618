"""Writing a run's outputs: the result files of an experiment, all or nothing.

Results are written to a staging directory and moved into place only when
complete, so a failed run never leaves a half-overwritten result directory.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from jaxkd import results


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


def write_outputs(out_dir: str, *, config, rows, summary, figures: dict[str, bytes], extra: dict | None = None):
    """Write config.json, records.csv, summary.json, env.json and figures, all-or-nothing."""
    files = {
        "config.json": results.to_json(dataclasses.asdict(config)),
        "records.csv": results.records_csv(rows),
        "summary.json": results.to_json(summary),
        "env.json": results.to_json(results.env_stamp()),
        **figures,
    }
    for name, content in (extra or {}).items():
        files[name] = content
    write_files(out_dir, files)
    return {name: os.path.join(os.path.abspath(out_dir), name) for name in files}
