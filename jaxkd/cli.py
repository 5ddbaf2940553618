"""The ``jaxkd`` command: ``list``, ``run``, ``data prepare``, ``theory``.

User mistakes print one line, ``jaxkd: error: ...``, and exit with status 2
before any expensive work; results already on disk are never half-replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

from jaxkd.errors import ConfigError

PRESET_NAMES = ("smoke", "default", "paper")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _cmd_list(args) -> int:
    import experiments

    for name in experiments.EXPERIMENTS:
        mod = experiments.get(name)
        summary = (mod.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<20} {summary}")
    return 0


def _cmd_run(args) -> int:
    import experiments
    from jaxkd.experiment import apply_overrides
    from jaxkd.results import check_writable

    mod = experiments.get(args.experiment)
    if args.seeds is not None and args.seeds <= 0:
        raise ConfigError(f"--seeds must be a positive integer, got {args.seeds}")
    config = apply_overrides(mod.PRESETS[args.preset], args.set or [], n_seeds=args.seeds)
    out = args.out or os.path.join("results", args.experiment, args.preset)
    check_writable(out)
    if os.path.exists(os.path.join(out, "summary.json")) and not (args.overwrite or args.resume):
        raise ConfigError(f"{os.path.abspath(out)} already holds complete results; pass --overwrite to replace "
                          "them or choose another --out")
    start = time.perf_counter()
    mod.run(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"jaxkd: {args.experiment} ({args.preset}) finished in {time.perf_counter() - start:.1f} s; "
          f"results in {os.path.abspath(out)}")
    return 0


def _cmd_data_prepare(args) -> int:
    from jaxkd.data.tfds_source import prepare

    print(prepare(args.name, data_dir=args.data_dir))
    return 0


def _cmd_theory_risk(args) -> int:
    from theory.query import risk_from_file

    print(json.dumps(risk_from_file(args.config)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxkd", description="Knowledge-distillation experiments in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list the registered experiments")
    p.set_defaults(fn=_cmd_list)

    p = sub.add_parser("run", help="run an experiment preset", description="Run an experiment preset.")
    p.add_argument("experiment", help="name from `jaxkd list`")
    p.add_argument("--preset", choices=PRESET_NAMES, default="default")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides the preset)")
    p.add_argument("--out", default=None, help="output directory (default results/EXPERIMENT/PRESET)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field; repeatable")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results and checkpoints of an earlier run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    q = dsub.add_parser("prepare", help="download and prepare a tfds dataset as array_record (needs network)",
                        description="Prepare an official tfds dataset as array_record. Needs the network and "
                                    "`pip install 'jaxkd[prepare]'` (TensorFlow).")
    q.add_argument("name", help="tfds dataset name, e.g. cifar10")
    q.add_argument("--data-dir", default=None,
                   help="tfds data directory (default $JAXKD_DATA_DIR or ~/tensorflow_datasets)")
    q.set_defaults(fn=_cmd_data_prepare)

    p = sub.add_parser("theory", help="spectral theory of SGD knowledge transfer")
    tsub = p.add_subparsers(dest="theory_command", required=True, parser_class=_Parser)
    q = tsub.add_parser("risk", help="exact expected excess risks for one configuration (JSON in, JSON out)",
                        description="Print the exact expected excess risks (no 1/2 factor) of the teacher, the "
                                    "direct student and the distilled student for CONFIG.json.")
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


def _format_warning(message, category, filename, lineno, line=None):
    return f"jaxkd: warning: {message}\n"


def main(argv=None) -> int:
    use_host_devices()
    warnings.formatwarning = _format_warning
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.fn(args)
    except ConfigError as err:
        print(f"jaxkd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxkd: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
