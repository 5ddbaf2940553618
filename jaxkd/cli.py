"""The ``jaxkd`` command: ``list``, ``show``, ``run``, ``report``, ``docs``, ``data prepare``, ``theory``.

User mistakes print one line, ``jaxkd: error: ...``, and exit with status 2
before any expensive work; results already on disk are never half-replaced
(:mod:`jaxkd.outputs`), files jaxkd did not write are never replaced, and a
run that fails or is stopped (Ctrl-C or SIGTERM, handled alike) leaves no
empty ``--out`` directory behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping

from jaxkd.errors import ConfigError, check
from theory.query import DESCRIPTION as RISK_DESCRIPTION
from theory.query import EPILOG as RISK_EPILOG

# The presets every built-in experiment has; an experiment may add its own (cifar_kd: capacity).
PRESET_NAMES = ("smoke", "default", "paper")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _cmd_list(args) -> int:
    import experiments

    width = max(len(name) for name in experiments.EXPERIMENTS)
    for name in experiments.EXPERIMENTS:
        print(f"{name:<{width}}  {experiments.summary(name)}")
    return 0


def _is_study_file(name: str) -> bool:
    return name.endswith(".py")


def experiment_name(name: str) -> str:
    """The name a run is filed under: a registered experiment's, or a study file's stem (``my_study.py``)."""
    return os.path.splitext(os.path.basename(name))[0] if _is_study_file(name) else name


def _resolve(args):
    """The experiment module and its preset with ``--seeds`` and ``--set`` applied (validated).

    ``--plugin`` files are imported first, so that the terms, models and
    datasets they register can be named in the preset and in ``--set``; an
    experiment named by a path ending in ``.py`` is a user's study file
    (:mod:`jaxkd.plugins`).
    """
    import experiments

    if not _is_study_file(args.experiment):
        experiments.check(args.experiment)  # before anything imports JAX: an unknown name is refused at once
    if args.seeds is not None and args.seeds <= 0:
        raise ConfigError(f"--seeds must be a positive integer, got {args.seeds}")
    from jaxkd import plugins
    from jaxkd.overrides import apply_overrides

    for path in args.plugin or []:
        _load_module(plugins.load, path)
    if _is_study_file(args.experiment):
        mod = _load_module(plugins.study_module, args.experiment)
    else:
        mod = experiments.get(args.experiment)
    if args.preset not in mod.PRESETS:
        raise ConfigError(
            f"{args.experiment} has no preset {args.preset!r}; it has: {', '.join(mod.PRESETS)} (choose with --preset)"
        )
    return mod, apply_overrides(mod.PRESETS[args.preset], args.set or [], n_seeds=args.seeds)


def _load_module(load, path: str):
    """``load(path)`` (a plugin or study file); a ``sys.exit()`` while the file is imported is one error line."""
    try:
        return load(path)
    except SystemExit as stop:
        raise ConfigError(
            f"{path} called sys.exit({stop.code!r}) while being imported; a plugin or study file must only "
            'define and register (put scripts under `if __name__ == "__main__":`)'
        ) from None


def _format_value(value) -> str:
    """A value as ``--set`` reads it back."""
    import numpy as np

    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (tuple, list)):
        return ",".join(_format_value(v) for v in value)
    return str(value)


def config_lines(config, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, value)`` for every leaf of ``config``; each pair is a valid ``--set key=value``.

    Objective terms are written as the README and ``--set`` write them,
    ``objective.kd.temperature`` (``objective.terms.kd.temperature`` where a
    term is itself named ``terms``).
    """
    from jaxkd.config import ObjectiveConfig

    if isinstance(config, ObjectiveConfig) and "terms" not in config.terms:
        items = list(config.terms.items())
    elif dataclasses.is_dataclass(config):
        items = [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)]
    elif isinstance(config, Mapping):
        items = list(config.items())
    else:
        return [(prefix, _format_value(config))]
    return [line for name, value in items for line in config_lines(value, f"{prefix}{name}.")] if items else []


def _cmd_show(args) -> int:
    from jaxkd.results import to_json

    _, config = _resolve(args)
    if args.json:
        print(to_json(dataclasses.asdict(config)))
        return 0
    lines = [(key[:-1], value) for key, value in config_lines(config)]
    width = max(len(key) for key, _ in lines)
    print(f"# {args.experiment}, preset {args.preset}; each line works as --set KEY=VALUE")
    for key, value in lines:
        print(f"{key:<{width}} = {value}")
    return 0


def _first_missing_dir(path: str) -> str | None:
    """The outermost directory on ``path`` that does not exist yet (None: ``path`` exists)."""
    path, first = os.path.abspath(path), None
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path, first = os.path.dirname(path), path
    return first


def _remove_if_empty(out: str, made: str | None) -> None:
    """Remove ``out`` and its parents up to ``made`` while they are empty: only what this command created."""
    if made is None:
        return
    path = os.path.abspath(out)
    while True:
        try:
            os.rmdir(path)  # fails on a non-empty directory, which is then kept
        except OSError:
            return
        if path == made:
            return
        path = os.path.dirname(path)


@contextlib.contextmanager
def _data_dir(data_dir: str | None):
    """Point the tfds reader at ``data_dir`` for the duration of a run (``$JAXKD_DATA_DIR``)."""
    if data_dir is None:
        yield
        return
    old = os.environ.get("JAXKD_DATA_DIR")
    os.environ["JAXKD_DATA_DIR"] = os.path.abspath(os.path.expanduser(data_dir))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JAXKD_DATA_DIR", None)
        else:
            os.environ["JAXKD_DATA_DIR"] = old


def _curves(kinds, out: str, resume: bool):
    """Training curves for ``--log`` (TensorBoard, W&B), or nothing."""
    if not kinds:
        return contextlib.nullcontext()
    from jaxkd import curves

    return curves.logging_to(kinds, out, resume=resume)


def _checkpoints(args, config) -> str | None:
    """Why this run cannot be resumed, or None when it writes checkpoints."""
    if not hasattr(config, "chunk_steps"):
        return f"{args.experiment} writes no checkpoints"
    if not config.chunk_steps:
        return (
            f"preset {args.preset!r} of {args.experiment} writes no checkpoints (chunk_steps is none; "
            "add --set chunk_steps=N, a multiple of eval.every that divides the steps, to make a new run "
            "resumable)"
        )
    return None


def _multi_process(args) -> bool:
    """Whether this run is one process of several: the flags, or a launcher ``jax.distributed`` detects."""
    from jaxkd.distributed import launcher_detected

    given = (args.coordinator, args.num_processes, args.process_id)
    return (
        any(v is not None for v in given)
        and (args.num_processes or 1) > 1
        or (all(v is None for v in given) and launcher_detected())
    )


_FATAL = "JAX distributed service detected fatal errors"
# Lines of the distributed runtime's own logs (absl, gloo), not jaxkd's.
_ABSL_LINE = re.compile(r"^([IWEF]\d{4} |\s+@ |\*\*\* |\[Gloo\]|Barrier (result|Id)|This (suggests|indicates))")


def _supervise(args, no_checkpoints: str | None) -> int:
    """Run this multi-process process in a child and turn a peer's death into one line.

    When another process of the run dies, JAX's distributed runtime ends the
    survivors with a fatal C++ log (after ``--heartbeat-timeout`` seconds)
    that Python cannot catch; the child's stderr is passed through without
    the runtime's log lines, and that end becomes one ``jaxkd: error:`` line.
    """
    import subprocess

    env = dict(os.environ, JAXKD_SUPERVISED="1")
    child = subprocess.Popen(
        [sys.executable, "-m", "jaxkd.cli", *args.argv], env=env, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    out = args.out or os.path.join("results", experiment_name(args.experiment), args.preset)
    made = _first_missing_dir(out)  # what the child makes; removed here when it is left empty
    fatal = in_log = said = False
    try:
        for line in child.stderr:
            if said:  # after the child's error line only the runtime's shutdown log follows
                continue
            said = line.startswith("jaxkd: error:")
            if _FATAL in line or "heartbeat timeout" in line:
                fatal = True
            if _ABSL_LINE.match(line):  # the runtime's log; its continuation lines follow until jaxkd speaks
                in_log = line[:1] in "EF"
                continue
            if line.startswith(("jaxkd", "Traceback")):
                in_log = False
            if not in_log:
                sys.stderr.write(line)
        rc = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGTERM)  # the child stops as after Ctrl-C and says how to resume
        for line in child.stderr:
            if not _ABSL_LINE.match(line):
                sys.stderr.write(line)
        rc = child.wait()
        return rc if rc >= 0 else 128 - rc
    if rc != 0 and args.process_id in (None, 0):
        _remove_if_empty(out, made)
    if rc != 0 and fatal and not said:
        raise _peer_lost(args, no_checkpoints, f"heartbeat timeout {args.heartbeat_timeout} s")
    if said:  # the child said what went wrong (and the runtime may have aborted it afterwards)
        return 2
    return rc if rc >= 0 else 128 - rc


def _peer_lost(args, no_checkpoints: str | None, why: str) -> ConfigError:
    """The one line a process says when another process of its run died."""
    return ConfigError(
        f"another process of this {args.num_processes or ''}-process run stopped answering ({why}), so this one "
        f"(process {args.process_id}) stopped too; "
        + (
            "restart every process with the same command to start again"
            if no_checkpoints
            else "restart every process with --resume to continue from the last checkpoint"
        )
    )


def _cmd_run(args) -> int:
    mod, config = _resolve(args)
    from jaxkd import distributed

    distributed.check_arguments(args.coordinator, args.num_processes, args.process_id)
    use_compilation_cache(not args.no_compile_cache)
    check(
        args.heartbeat_timeout > 0,
        f"--heartbeat-timeout must be a positive number of seconds, got {args.heartbeat_timeout}",
    )
    multi = _multi_process(args)
    if multi:
        check_multi = getattr(mod, "MULTI_PROCESS", False)
        if not check_multi:
            raise ConfigError(
                f"{args.experiment} does not run over several processes yet (experiments that do: "
                "digits_kd, digits_methods); run it in one process"
            )
        if not os.environ.get("JAXKD_SUPERVISED"):
            return _supervise(args, _checkpoints(args, config))
        distributed.initialize(
            args.coordinator, args.num_processes, args.process_id, heartbeat_timeout=args.heartbeat_timeout
        )
    from jaxkd.distributed import is_primary
    from jaxkd.outputs import check_replaceable, check_writable, recover

    no_checkpoints = _checkpoints(args, config)
    if args.resume and no_checkpoints:
        raise ConfigError(f"--resume needs checkpoints, but {no_checkpoints}; drop --resume")
    out = args.out or os.path.join("results", experiment_name(args.experiment), args.preset)
    with contextlib.suppress(OSError):  # (a directory it cannot write is refused below, in one line)
        recover(out)  # a swap of result files cut off by a kill is completed first
    check_replaceable(out)  # before any training: never replace a file jaxkd did not write
    if os.path.exists(os.path.join(out, "summary.json")) and not (args.overwrite or args.resume):
        raise ConfigError(
            f"{os.path.abspath(out)} already holds complete results; pass --overwrite to replace "
            "them or choose another --out"
        )
    kinds = ()
    if args.log:
        from jaxkd import curves

        kinds = curves.check_kinds([k.strip() for item in args.log for k in item.split(",") if k.strip()])
    from jaxkd.program import limit_memory, parse_size

    max_memory = None if args.max_memory is None else parse_size(args.max_memory)
    made = _first_missing_dir(out) if not multi or is_primary() else None  # one process cleans up after a stop
    start = time.perf_counter()
    try:  # from the first directory made: a stop at any point removes what is still empty
        check_writable(out)
        dataset = getattr(getattr(config, "data", None), "dataset", None)
        if args.data_dir is not None and not (dataset or "").startswith("tfds:"):  # after every check: an error
            warnings.warn(  # is one line, never this warning and an error
                f"--data-dir is read only for tfds: datasets; this run uses {dataset or 'no dataset'}", stacklevel=1
            )
        with (
            _data_dir(args.data_dir),
            _curves(kinds if is_primary() else (), out, args.resume),
            limit_memory(max_memory),
        ):
            try:
                mod.run(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
            except Exception as err:  # a collective whose peer died fails here before the heartbeat says so
                import jax

                if not multi or not isinstance(err, jax.errors.JaxRuntimeError):
                    raise
                first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
                raise _peer_lost(args, no_checkpoints, first) from None
    except KeyboardInterrupt as stop:
        _remove_if_empty(out, made)
        if no_checkpoints:
            how = f"{no_checkpoints}, so rerun the same command to start again"
        else:
            how = f"rerun the same command with --resume to continue from the last checkpoint in {out}"
        print(f"jaxkd: {_stopped(stop)}; {how}", file=sys.stderr)
        return _stop_status(stop)
    except BaseException:
        _remove_if_empty(out, made)
        raise
    if is_primary():
        print(
            f"jaxkd: {args.experiment} ({args.preset}) finished in {time.perf_counter() - start:.1f} s; "
            f"results in {os.path.abspath(out)}"
        )
    return 0


def _cmd_report(args) -> int:
    from jaxkd.report import build_report, render

    metrics = [m.strip() for item in args.metric or [] for m in item.split(",") if m.strip()]
    print(render(build_report(args.results_dir, metrics=metrics, at=args.at), args.format), end="")
    return 0


def _cmd_docs(args) -> int:
    from jaxkd import docnumbers

    paths = docnumbers.document_paths(args.documents)
    if args.runs:
        for run in docnumbers.documented_runs(paths):
            experiment, preset = docnumbers.run_preset(run)
            print(experiment, preset, docnumbers.run_directory(run, args.results))
        return 0
    only = set(args.run) if args.run else None
    for run in only or ():
        docnumbers.run_directory(run)  # an unknown experiment or preset is one error line
    fn = docnumbers.update_documents if args.update else docnumbers.check_documents
    outcome = fn(paths, args.results, only)
    problems, closing = docnumbers.describe(outcome, updated=args.update)
    for line in problems:
        print(f"jaxkd: {line}", file=sys.stderr)
    print(closing)
    return 1 if problems else 0


def _cmd_data_prepare(args) -> int:
    from jaxkd.data.tfds_source import prepare

    print(prepare(args.name, data_dir=args.data_dir))
    return 0


def _cmd_theory_risk(args) -> int:
    from theory.query import risk_from_file

    print(json.dumps(risk_from_file(args.config)))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxkd")
    except PackageNotFoundError:  # a source tree that was never installed
        from jaxkd import __version__

        return __version__


def _add_config_arguments(p) -> None:
    p.add_argument("experiment", help="name from `jaxkd list`, or a study file my_study.py (docs/extending.md)")
    p.add_argument(
        "--plugin",
        action="append",
        metavar="FILE.py",
        help="import a Python file that registers terms, models or datasets (jaxkd.register_term, ...) before "
        "the preset is resolved; repeatable; recorded with its hash in config.json",
    )
    p.add_argument(
        "--preset",
        default="default",
        help="smoke (seconds), default or paper, or another preset the experiment names in its docstring "
        "(default: %(default)s, what runs without --preset)",
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides the preset)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field; repeatable")


def build_parser() -> argparse.ArgumentParser:
    from jaxkd.data.tfds_source import PREPARE_INSTALL
    from jaxkd.report import AT_CHOICES as REPORT_AT
    from jaxkd.report import FORMATS as REPORT_FORMATS

    parser = _Parser(prog="jaxkd", description="Knowledge-distillation experiments in JAX.")
    parser.add_argument("--version", action="version", version=f"jaxkd {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list the registered experiments")
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser(
        "show",
        help="print an experiment's resolved configuration",
        description="Print the configuration `jaxkd run` would use: the preset with --seeds and "
        "--set applied and validated, one `key = value` line per field (each line "
        "works as --set KEY=VALUE), or JSON.",
    )
    _add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of key = value lines")
    p.set_defaults(fn=_cmd_show)

    p = sub.add_parser("run", help="run an experiment preset", description="Run an experiment preset.")
    _add_config_arguments(p)
    p.add_argument("--out", default=None, help="output directory (default results/EXPERIMENT/PRESET)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="where prepared tfds datasets are read (default $JAXKD_DATA_DIR, else $TFDS_DATA_DIR, "
        "else ~/tensorflow_datasets)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last complete checkpoint in --out (presets with chunk_steps)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results and checkpoints an earlier jaxkd run wrote in --out (never other files)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not read or write XLA's persistent compilation cache (default: $JAX_COMPILATION_CACHE_DIR, else "
        "$XDG_CACHE_HOME/jaxkd/xla or ~/.cache/jaxkd/xla, at most 4 GiB), so every program is compiled afresh",
    )
    p.add_argument(
        "--log",
        action="append",
        metavar="KIND",
        help="training curves of every seed and condition: tensorboard (event files in OUT/tensorboard; needs "
        "pip install -e '.[tensorboard]') or wandb (offline, in OUT/wandb; needs wandb); repeatable",
    )
    p.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="memory a sweep may use per device (e.g. 2GiB; default: what the device has); a sweep whose seeds "
        "need more runs them in blocks that fit, with the same records",
    )
    g = p.add_argument_group("several processes (docs/distributed.md)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address and a free port")
    g.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in the run")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0..N-1")
    g.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=100,
        metavar="S",
        help="seconds without news from a process before the others stop (default %(default)s)",
    )
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser(
        "report",
        help="print the summary table of a finished run",
        description="Print the summary table of a finished run, read from RESULTS_DIR/summary.json: each "
        "condition's mean ± std over seeds, 95% CI and n per metric, then the run's tests with corrected "
        "p-values and effect sizes.",
    )
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="the --out directory of a finished `jaxkd run`")
    p.add_argument("--format", choices=REPORT_FORMATS, default="text", help="output format (default text)")
    p.add_argument(
        "--metric",
        action="append",
        metavar="NAME",
        help="metric to report, e.g. test/acc; repeatable or comma-separated (default: every test/ metric)",
    )
    p.add_argument(
        "--at",
        choices=REPORT_AT,
        default="selected",
        help="evaluation point: selected (by the validation metric, default), last, or max_over_evals "
        "(each seed's best test value: optimistic)",
    )
    p.set_defaults(fn=_cmd_report)

    p = sub.add_parser(
        "docs",
        help="check or regenerate the numbers the README and docs quote from preset runs",
        description="The README and docs quote preset runs' numbers in generated regions bound to a "
        "run's summary.json (<!--n RUN PATH FORMAT-->VALUE<!--/n--> and <!--rows ...--> blocks; "
        "jaxkd/docnumbers.py describes them). --check exits 1 listing every region that differs from "
        "RESULTS/<experiment>/summary.json by more than one unit in its last printed digit; --update "
        "rewrites them. `make numbers` runs every documented preset, then --update.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="compare every region with its run; exit 1 on a difference")
    mode.add_argument("--update", action="store_true", help="rewrite every region from its run's summary.json")
    mode.add_argument("--runs", action="store_true", help="print the runs the documents quote: experiment preset dir")
    p.add_argument("documents", nargs="*", help="markdown files (default README.md and docs/*.md)")
    p.add_argument("--results", default="results", help="where the runs are (default results)")
    p.add_argument("--run", action="append", metavar="RUN", help="only regions of this run (EXPERIMENT[:PRESET])")
    p.set_defaults(fn=_cmd_docs)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    q = dsub.add_parser(
        "prepare",
        help="download and prepare a tfds dataset as array_record (needs network)",
        description="Prepare an official tfds dataset as array_record. Needs the network and "
        f"TensorFlow: `{PREPARE_INSTALL}`.",
    )
    q.add_argument("name", help="tfds dataset name, e.g. cifar10")
    q.add_argument(
        "--data-dir",
        default=None,
        help="tfds data directory (default $JAXKD_DATA_DIR, else $TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )
    q.set_defaults(fn=_cmd_data_prepare)

    p = sub.add_parser("theory", help="spectral theory of SGD knowledge transfer")
    tsub = p.add_subparsers(dest="theory_command", required=True, parser_class=_Parser)
    q = tsub.add_parser(
        "risk",
        help="exact expected excess risks for one configuration (JSON in, JSON out)",
        description=RISK_DESCRIPTION,
        epilog=RISK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("config", help="path to a JSON configuration")
    q.set_defaults(fn=_cmd_theory_risk)
    return parser


def use_host_devices() -> None:
    """On CPU, expose one XLA host device per core so sweeps shard their seed axis.

    Measured on a 2-core CPU: about 2x faster than one device for the demo's
    sweep (benchmarks/RESULTS.md). Only effective before JAX initialises; an
    explicit ``--xla_force_host_platform_device_count`` in XLA_FLAGS wins, and
    the flag does nothing on GPU/TPU.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" in sys.modules or "xla_force_host_platform_device_count" in flags:
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={os.cpu_count() or 1}".strip()


COMPILE_CACHE_BYTES = 4 << 30


def use_compilation_cache(enabled: bool = True) -> str | None:
    """XLA's persistent compilation cache for this process, so that a rerun of a preset does not recompile.

    ``$JAX_COMPILATION_CACHE_DIR`` (JAX's own setting) wins and is used as it
    is; otherwise jaxkd's folder ``$XDG_CACHE_HOME/jaxkd/xla`` (default
    ``~/.cache/jaxkd/xla``), which JAX keeps under 4 GiB by evicting its least
    recently used entries. Entries are keyed by the program, the compile
    options and the jaxlib version, so a changed program or jaxlib compiles
    anew. Returns the folder, or None when disabled or not writable.
    """
    import jax

    if not enabled:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not path:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "jaxkd", "xla")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            return None
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    return os.path.abspath(path)


def _format_warning(message, category, filename, lineno, line=None):
    return f"jaxkd: warning: {message}\n"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``), raised like Ctrl-C so that a stopped run cleans up the same way."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block SIGTERM raises :class:`Terminated`; the previous handlers are restored after.

    A signal's exception is raised in whatever Python code runs next, and where that is a garbage-collector
    or finaliser callback (JAX runs one) Python prints "Exception ignored" and drops it, so the run would go
    on. Such a dropped stop (SIGTERM or Ctrl-C) is sent again, to be raised in the next code that can stop.
    """
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    hook = sys.unraisablehook

    def redeliver(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # Later and from another thread: sent now, it would be raised inside this hook and dropped again.
            sig = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
            timer = threading.Timer(0.05, os.kill, (os.getpid(), sig))
            timer.daemon = True
            timer.start()
        else:
            hook(unraisable)

    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        sys.unraisablehook = hook
        signal.signal(signal.SIGTERM, previous)


def _stopped(stop: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"


def _stop_status(stop: KeyboardInterrupt) -> int:
    """The shell's status for a command stopped by the signal: 128 + its number."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines (and so a log reader) breaks at


def _one_line(message: str) -> str:
    """``message`` on one line: a line break in a quoted path, value or plugin's error is shown escaped (``\\n``)."""
    return message.translate({ord(c): c.encode("unicode_escape").decode() for c in _LINE_BREAKS})


def main(argv=None) -> int:
    use_host_devices()
    warnings.formatwarning = _format_warning
    parser = build_parser()
    try:
        with _sigterm_as_interrupt():
            args = parser.parse_args(argv)
            args.argv = list(sys.argv[1:] if argv is None else argv)  # for a supervised multi-process child
            return args.fn(args)
    except ConfigError as err:
        print(f"jaxkd: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"jaxkd: {_stopped(stop)}", file=sys.stderr)
        return _stop_status(stop)
    except BrokenPipeError:  # stdout piped into a reader that stopped early (`jaxkd show ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
