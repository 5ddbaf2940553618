"""How far a procedural16 teacher is from its plateau: validation and test accuracy against the step budget.

Trains ``experiments/subdistill.py``'s teacher configuration (all 100 ``procedural16``
classes, a 20 % validation split, Adam 3e-3 cosine, batch 128, random crops of 2
pixels, evaluation every 50 steps) with the ``cnn2d`` widths and step budgets given,
one seed (the experiment's teacher key), and reports the validation-selected
model's validation and test accuracy, the selected step and the wall time
(compilation included). The process keeps JAX's default single CPU device, so a
budget's numbers differ by float round-off from the same teacher trained inside
``jaxkd run subdistill`` (two host devices). Used by docs/procedural.md and
docs/subdistill.md::

    python benchmarks/teacher_plateau.py --runs 32,64,128:3000 32,64,128:6000 32,64,128:12000 \\
        16,32,64:6000 16,32,64:12000 64,128,256:3000 --out benchmarks/results/teacher_plateau.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

import experiments.subdistill as sd  # noqa: E402
from jaxkd.config import ModelConfig  # noqa: E402
from jaxkd.data import load_dataset  # noqa: E402
from jaxkd.experiment import teacher_summary, train_teacher  # noqa: E402


def one(widths: tuple[int, ...], steps: int, dataset) -> dict:
    base = sd.Config()
    config = dataclasses.replace(
        base,
        teacher_model=ModelConfig("cnn2d", widths),
        teacher_recipe=dataclasses.replace(base.teacher_recipe, steps=steps),
    )
    key_teacher, _ = jax.random.split(jax.random.key(config.seed))  # subdistill.run's teacher key
    start = time.perf_counter()
    _, result = train_teacher(config.teacher_config(), dataset, key_teacher, progress=False)
    summary = teacher_summary(result)
    return {
        "widths": list(widths),
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
        "val": summary["val/acc"]["selected"]["mean"],
        "test": summary["test/acc"]["selected"]["mean"],
        "selected_step": summary["selected_steps"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="W1,W2,W3:STEPS", help="cnn2d widths and steps")
    p.add_argument("--out", default=None, help="write the JSON result here (else it is printed)")
    args = p.parse_args(argv)
    runs = []
    for spec in args.runs:
        widths, _, steps = spec.partition(":")
        try:
            runs.append((tuple(int(w) for w in widths.split(",")), int(steps)))
        except ValueError:
            p.error(f"cannot read {spec!r}: write widths and steps as 32,64,128:6000")
    dataset = load_dataset("procedural16")
    result = {"check": "teacher_plateau", "devices": jax.device_count(), "runs": [one(w, s, dataset) for w, s in runs]}
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
