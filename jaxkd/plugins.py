"""User modules named on the command line: ``--plugin my_methods.py`` and ``jaxkd run my_study.py``.

A plugin is a Python file imported before the run's configuration is
resolved, so that the terms, models and datasets it registers
(:mod:`jaxkd.extend`) can be named in presets and ``--set`` lines. A study
file is a plugin that also defines an experiment, as the built-in ones do:
``Config`` (a frozen dataclass), ``PRESETS`` (``{"smoke", "default",
"paper"}`` or a subset) and ``run(config, out_dir, *, resume, overwrite,
progress) -> dict``.

Every plugin loaded in a process is recorded, with the SHA-256 of its
content, in each run's ``config.json`` and fingerprint (:func:`loaded`): a
resume after the file changed is refused, naming ``plugins``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback

from jaxkd.errors import ConfigError, check

# abspath -> {"path", "sha256", "module"}: what this process imported, in order.
_LOADED: dict[str, dict] = {}


def _hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load(path: str):
    """Import the Python file ``path`` once (again if its content changed); returns the module.

    A missing file, a file that is not ``.py`` or an error raised while the
    module runs is one :class:`ConfigError` line naming the file and line.
    """
    check(
        isinstance(path, str) and path.endswith(".py"),
        f"a plugin is a Python file ending in .py, got {path!r}",
    )
    full = os.path.abspath(os.path.expanduser(path))
    check(os.path.isfile(full), f"plugin {path} does not exist; give the path of a .py file")
    digest = _hash(full)
    seen = _LOADED.get(full)
    if seen is not None and seen["sha256"] == digest:
        return sys.modules[seen["module"]]
    from jaxkd import extend

    before = {kind: dict(extend._USER[kind]) for kind in extend.KINDS}
    stem = os.path.splitext(os.path.basename(full))[0]
    name = f"jaxkd_plugin_{''.join(c if c.isalnum() else '_' for c in stem)}_{digest[:8]}"
    spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = os.path.dirname(full)
    added_path = folder not in sys.path
    if added_path:  # the plugin may import its siblings
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except ConfigError as err:
        sys.modules.pop(name, None)
        raise ConfigError(f"plugin {path}: {err}") from None
    except Exception as err:
        sys.modules.pop(name, None)
        where = [f for f in traceback.extract_tb(err.__traceback__) if os.path.abspath(f.filename) == full]
        at = f" (line {where[-1].lineno})" if where else ""
        raise ConfigError(f"plugin {path} failed{at}: {type(err).__name__}: {err}") from None
    finally:
        if added_path:
            sys.path.remove(folder)
    added = {
        kind: sorted(n for n, obj in extend._USER[kind].items() if before[kind].get(n) is not obj)
        for kind in extend.KINDS
    }
    _LOADED[full] = {
        "path": full,
        "sha256": digest,
        "module": name,
        "registers": {k: v for k, v in added.items() if v},
    }
    return module


def loaded() -> list[dict]:
    """The plugins this process imported: ``[{"path", "sha256", "registers"}]`` (for config.json and fingerprints)."""
    return [{k: v for k, v in p.items() if k != "module"} for p in _LOADED.values()]


def study_module(path: str):
    """The experiment a study file defines (``Config``, ``PRESETS``, ``run``), checked in one line."""
    module = load(path)
    missing = [a for a in ("Config", "PRESETS", "run") if not hasattr(module, a)]
    check(
        not missing,
        f"{path} defines no {', '.join(missing)}; a study file defines Config, PRESETS and run like the "
        "experiments in experiments/ (use --plugin for a file that only registers terms, models or datasets)",
    )
    check(
        isinstance(module.PRESETS, dict) and module.PRESETS,
        f"{path}: PRESETS must be a dict of preset name -> Config, got {type(module.PRESETS).__name__}",
    )
    return module


def provenance() -> dict:
    """What the user added to jaxkd in this process, for ``config.json`` and fingerprints; empty when nothing.

    ``plugins``: the files loaded (:func:`loaded`); ``registered``: every
    user registration with its qualified name and source hash
    (:func:`jaxkd.extend.registered`, which also covers a notebook's).
    """
    from jaxkd.extend import registered

    out = {}
    if _LOADED:
        out["plugins"] = loaded()
    reg = registered()
    if reg:
        out["registered"] = reg
    return out
