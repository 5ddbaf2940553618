"""The summary table of a finished run, read back from its ``summary.json``.

Usage::

    jaxkd report results/digits_methods                      # test metrics at the selected evaluation
    jaxkd report results/digits_methods --format markdown    # paste into a README or a paper draft
    jaxkd report results/digits_kd --metric test/acc --metric val/acc --at last
    jaxkd report results/digits_kd --format csv > table.csv  # or json: one row per condition × metric

For every condition (the teacher first, as a reference) and metric it prints
mean ± std over seeds, the 95% Student-t CI of the mean and n (seeds used;
``6/8`` when two diverged and were excluded), then the run's comparisons
(tests) on those metrics: the difference with its CI, the statistic, the
p-value, the corrected p-value (Holm-Bonferroni, within one metric at one
evaluation point) and the effect size. ``--at`` chooses the evaluation point:
``selected`` (default; each seed's evaluation picked by the validation metric
named in the summary, so the test set never chooses), ``last`` (the final
evaluation) or ``max_over_evals`` (each seed's best value over all
evaluations; for test metrics that is the test-set maximum, optimistic, kept
only to compare with papers that report it; no tests are run on it). Default
metrics: every ``test/`` metric. Runs whose summary has no condition table
(the theory experiments) print their scalar entries instead, with a line
saying so; curves stay in ``summary.json``. Nothing is recomputed: the numbers
are the ones ``jaxkd run`` wrote. A summary's ``note`` (e.g. an interval of a
bounded metric clipped to its bounds) is printed under its table, and so is
the note of a summary's ``scope`` (what the intervals cover, e.g. student
seeds under one shared teacher). Text and markdown show each metric at one
precision (4 decimals; more below 1e-3), so a difference below it prints as
zero.

The functions are pure: :func:`load_run` reads a directory,
:func:`build_report` turns it into rows, :func:`render` formats the rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os

from jaxkd.errors import ConfigError, check_name

AT_CHOICES = ("selected", "last", "max_over_evals")
FORMATS = ("text", "csv", "json", "markdown")

# Keys a comparison (one test) may carry, in the order they are looked for.
_STATISTIC_KEYS = ("t", "statistic", "u", "U", "z")
_EFFECT_NAMES = {
    "cohens_dz": ("Cohen's d_z", "d_z"),
    "hedges_g": ("Hedges' g", "g"),
    "cohens_d": ("Cohen's d", "d"),
    "rank_biserial": ("rank-biserial r", "r_rb"),
    "effect_size": ("effect size", "effect"),
}
CSV_COLUMNS = (
    "kind",
    "table",
    "metric",
    "at",
    "condition",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "n",
    "n_seeds",
    "n_diverged",
    "comparison",
    "test",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "statistic",
    "statistic_kind",
    "p",
    "p_adjusted",
    "correction",
    "effect_size",
    "effect_size_kind",
    "note",
)


def load_run(path: str) -> dict:
    """The parsed ``summary.json`` of the finished run in ``path``; one-line errors for anything else."""
    shown = os.path.abspath(os.path.expanduser(path))
    hint = "give the --out directory of a finished `jaxkd run`"
    if not os.path.exists(shown):
        raise ConfigError(f"{shown} does not exist; {hint}")
    if not os.path.isdir(shown):
        if os.path.basename(shown) == "summary.json":
            hint = f"give its directory, {os.path.dirname(shown)}"
        raise ConfigError(f"{shown} is not a directory; {hint}")
    from jaxkd.outputs import recover

    with contextlib.suppress(OSError):  # a read-only copy is read as it is
        recover(shown)  # a run killed while moving its results into place: complete the move before reading
    summary_path = os.path.join(shown, "summary.json")
    if not os.path.isfile(summary_path):
        entries = set(os.listdir(shown))
        runs = sorted(e for e in entries if os.path.isfile(os.path.join(shown, e, "summary.json")))
        if runs:
            raise ConfigError(
                f"{shown} holds no summary.json but runs below it do: {', '.join(runs)}; report one of those"
            )
        staging = any(e.startswith(".jaxkd-staging-") for e in entries)
        if entries & {"checkpoints", "config.json", "records.csv"} or staging:
            raise ConfigError(
                f"{shown} is not a finished run (no summary.json yet): it was interrupted or is still "
                "running; finish it with `jaxkd run ... --resume` (or rerun it), then report it"
            )
        raise ConfigError(f"{shown} has no summary.json, so it is not a jaxkd results directory; {hint}")
    try:
        with open(summary_path) as f:
            summary = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {summary_path} ({err}); rerun the experiment to rewrite it") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{summary_path} is not a JSON object, so not a jaxkd summary; {hint}")
    return summary


def _num(x) -> float:
    """A summary value as a float (JSON ``null`` = undefined = NaN)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _is_final_only(v) -> bool:
    """A metric summary of a run that records only its final step: the stats themselves, no evaluation points."""
    return isinstance(v, dict) and "mean" in v and "ci_low" in v


def _is_metric_summary(v) -> bool:
    return _is_final_only(v) or (
        isinstance(v, dict) and any(isinstance(v.get(a), dict) and "mean" in v[a] for a in AT_CHOICES)
    )


def _stats_at(v, at: str):
    """The summary at ``at``; a final-step-only summary serves ``selected`` and ``last`` (it has nothing else)."""
    if _is_final_only(v):
        return v if at != "max_over_evals" else None
    return (v or {}).get(at)


def _is_condition(v) -> bool:
    return isinstance(v, dict) and any(_is_metric_summary(x) for x in v.values())


def condition_tables(summary: dict, path: tuple = ()) -> list[tuple[str, dict]]:
    """``(name, block)`` for every block with a ``conditions`` table, depth first ("" = top level).

    A block is ``{"conditions": {name: {metric: {at: stats}}}, "teacher"?, "comparisons"?, "legend"?}``;
    runs of several teacher/student pairs nest one block per pair (``pairs/<pair>``).
    """
    conds = summary.get("conditions")
    if isinstance(conds, dict) and any(_is_condition(c) for c in conds.values()):
        return [("/".join(path), summary)]
    return [t for k, v in summary.items() if isinstance(v, dict) for t in condition_tables(v, (*path, str(k)))]


def _members(block: dict) -> list[tuple[str, str, dict]]:
    """``(name, role, per-metric summaries)``: the teacher (a reference) first, then the conditions."""
    out = [("teacher", "teacher", block["teacher"])] if _is_condition(block.get("teacher")) else []
    return out + [(n, "condition", c) for n, c in block["conditions"].items() if _is_condition(c)]


def available_metrics(tables) -> list[str]:
    """Every metric any member of any table summarises, sorted."""
    return sorted(
        {m for _, block in tables for _, _, c in _members(block) for m, v in c.items() if _is_metric_summary(v)}
    )


def condition_rows(tables, metrics, at: str) -> list[dict]:
    """One row per table × metric × member: mean, std, CI, n (seeds used), n_seeds and n_diverged."""
    rows = []
    for table, block in tables:
        for metric in metrics:
            for name, role, c in _members(block):
                s = _stats_at(c.get(metric), at)
                if not isinstance(s, dict):
                    continue
                rows.append(
                    {
                        "kind": role,
                        "table": table,
                        "metric": metric,
                        "at": at,
                        "condition": name,
                        "mean": _num(s.get("mean")),
                        "std": _num(s.get("std")),
                        "ci_low": _num(s.get("ci_low")),
                        "ci_high": _num(s.get("ci_high")),
                        "n": s.get("n"),
                        "n_seeds": c.get("n_seeds"),
                        "n_diverged": c.get("n_diverged"),
                        "note": s.get("note") or "",
                    }
                )
    return rows


def _tests(node, path=()):
    """``(path, test)`` for every dict below ``node`` that holds a p-value."""
    if isinstance(node, dict) and "p" in node:
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _tests(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _tests(v, (*path, str(i)))


def _comparison_row(table: str, path: tuple, t: dict) -> dict:
    """A test as a row, read by the fields every jaxkd test record carries (``jaxkd.experiment.label_test``)."""
    missing = [k for k in ("comparison", "metric", "at") if k not in t]
    if missing:
        where = "/".join(p for p in (table, *path) if p)
        raise ConfigError(
            f"the test at {where} in summary.json has no {', '.join(missing)} field(s): it was written by an "
            "older jaxkd; rerun the experiment to write it again"
        )
    metric, at, name = t["metric"], t["at"], t["comparison"]
    adjusted = next((k for k in t if k.startswith("p_") and k != "p_value"), None)
    effect = next((k for k in _EFFECT_NAMES if k in t), None)
    kind = t.get("effect_size_kind") if effect == "effect_size" else None  # compare_family names its effect
    effect_kind = kind if kind in _EFFECT_NAMES else effect
    stat = next((k for k in _STATISTIC_KEYS if k in t), None)
    n = t.get("n", t.get("n_a"))
    return {
        "kind": "comparison",
        "table": table,
        "metric": metric,
        "at": at,
        "comparison": name,
        "test": t.get("test", ""),
        "diff_mean": _num(t.get("diff_mean", t.get("diff"))),
        "diff_ci_low": _num(t.get("diff_ci_low", t.get("ci_low"))),
        "diff_ci_high": _num(t.get("diff_ci_high", t.get("ci_high"))),
        "statistic": _num(t.get(stat)),
        "statistic_kind": stat or "",
        "p": _num(t.get("p")),
        "p_adjusted": _num(t.get(adjusted)),
        "correction": adjusted[2:] if adjusted else "",
        "effect_size": _num(t.get(effect)),
        "effect_size_kind": effect_kind or "",
        "n": n,
        "note": t.get("note") or "",
    }


def comparison_rows(tables, metrics, at: str) -> list[dict]:
    """One row per test in the tables' ``comparisons`` (or ``tests``) on ``metrics`` at ``at`` (their order kept).

    Every test record names its ``metric``, evaluation point ``at`` (None: the run's one point per seed)
    and ``comparison``; nothing is inferred from where it sits in the summary.
    """
    keep = set(metrics)
    rows = []
    for table, block in tables:
        tests = block.get("comparisons", block.get("tests"))
        found = [_comparison_row(table, p, t) for p, t in _tests(tests)]
        found = [r for r in found if r["metric"] in keep and r["at"] in (at, None)]
        rows += sorted(found, key=lambda r: metrics.index(r["metric"]))
    return rows


def scalar_entries(node, prefix: str = "") -> tuple[dict, int]:
    """Flattened ``{dotted.key: scalar}`` of a summary, and the number of lists (curves) left out."""
    out, lists = {}, 0
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            sub, n = scalar_entries(v, f"{key}.")
            out.update(sub)
            lists += n
        elif isinstance(v, list):
            lists += 1
        else:
            out[key] = v
    return out, lists


def _at_note(at: str, selected_by: str | None) -> str:
    if at == "selected":
        return (
            f"at selected: each seed's evaluation picked by {selected_by or 'the validation metric'} "
            "(the test set never picks)"
        )
    if at == "last":
        return "at last: the final evaluation of each seed"
    return (
        "at max_over_evals: each seed's best value over all evaluations (maximum; minimum for losses); for "
        "test/ metrics this is the TEST-SET MAXIMUM, chosen on the test set, so it is optimistic (kept only to "
        "compare with papers that report it)"
    )


def build_report(path: str, *, metrics=None, at: str = "selected") -> dict:
    """Everything ``jaxkd report`` prints, as plain data.

    Returns ``{"run", "kind": "conditions", "at", "metrics", "conditions", "comparisons", "legend", "scope",
    "notes"}`` (``scope``: table -> the note of the summary's ``scope`` entry, where it has one)
    for a run with a condition table, else ``{"run", "kind": "scalars", "scalars", "lists_omitted", "notes"}``.
    """
    check_name("evaluation point (--at)", at, AT_CHOICES)
    summary = load_run(path)
    return build_report_from_summary(summary, metrics=metrics, at=at, run=os.path.abspath(os.path.expanduser(path)))


def build_report_from_summary(summary: dict, *, metrics=None, at: str = "selected", run: str = "(in memory)") -> dict:
    """:func:`build_report` of a summary already in memory (a :class:`jaxkd.study.Study`'s); ``run`` names it."""
    check_name("evaluation point (--at)", at, AT_CHOICES)
    tables = condition_tables(summary)
    if not tables:
        if metrics:
            raise ConfigError(
                f"{run}/summary.json has no condition table (no 'conditions' entry), so --metric does "
                "not apply; drop --metric to see its scalar entries"
            )
        scalars, lists = scalar_entries(summary)
        note = (
            f"{run}/summary.json has no condition table (no 'conditions' entry); its scalar entries follow, "
            f"its {lists} lists (curves) are in summary.json"
        )
        return {"run": run, "kind": "scalars", "scalars": scalars, "lists_omitted": lists, "notes": [note]}
    known = available_metrics(tables)
    final_only = all(
        _is_final_only(v) for _, b in tables for _, _, c in _members(b) for v in c.values() if _is_metric_summary(v)
    )
    if final_only and at == "max_over_evals":
        raise ConfigError(
            f"{run} records each seed's final step only, so there is no maximum over evaluations; drop --at"
        )
    if metrics:
        metrics = list(dict.fromkeys(metrics))
        for m in metrics:
            check_name("metric", m, known)
    else:
        tested = {r["metric"] for r in comparison_rows(tables, known, at)}
        metrics = [m for m in known if m.startswith("test/")] or [m for m in known if m in tested] or known
    selected_by = next(
        (c.get("selected_by") for _, b in tables for _, _, c in _members(b) if c.get("selected_by")), None
    )
    notes = [
        "this run records each seed's final step only (no validation selection, no maximum over evaluations)"
        if final_only
        else _at_note(at, selected_by)
    ]
    for table, block in tables:
        for name, _, c in _members(block):
            if c.get("n_diverged"):
                seeds = [str(s) for s in c.get("diverged_seeds") or []]
                which = f"; seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}" if seeds else ""
                notes.append(
                    f"{table + ': ' if table else ''}{name}: {c['n_diverged']} of {c.get('n_seeds')} seeds "
                    f"diverged (NaN/Inf{which}) and are excluded"
                )
    comparisons = comparison_rows(tables, metrics, at)
    if not comparisons:
        notes.append(
            "no tests on these metrics at this evaluation point"
            + (" (the run's tests are at selected and last)" if at == "max_over_evals" else "")
        )
    legend = {table: block["legend"] for table, block in tables if isinstance(block.get("legend"), dict)}
    scope = {table: _scope_note(block) or _scope_note(summary) for table, block in tables}
    return {
        "run": run,
        "kind": "conditions",
        "at": at,
        "metrics": metrics,
        "conditions": condition_rows(tables, metrics, at),
        "comparisons": comparisons,
        "legend": legend,
        "scope": {table: note for table, note in scope.items() if note},
        "notes": notes,
        "final_only": final_only,
    }


def _scope_note(block: dict) -> str | None:
    """The note of a summary's ``scope`` entry: what its intervals cover (e.g. student seeds under one teacher)."""
    scope = block.get("scope")
    return scope.get("note") if isinstance(scope, dict) and scope.get("note") else None


# --- rendering ---------------------------------------------------------------------------------------------------


def decimals_for(scale) -> int:
    """Decimals that show a metric whose values are of size ``scale``: 4, more for metrics below 1e-3.

    One precision per metric and table, for its means, stds, CIs and differences alike: a difference
    smaller than half the last shown digit of the quantities it compares prints as zero at that precision
    (two identical conditions: ``0.0000``, not ``-3.725e-09``).
    """
    scale = _num(scale)
    if not math.isfinite(scale) or scale == 0 or scale >= 1e-3:
        return 4
    return 2 - math.floor(math.log10(scale))


def _fmt(x, decimals: int = 4) -> str:
    x = _num(x)
    if not math.isfinite(x):
        return "n/a"
    text = f"{x:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text  # round-off below the precision shows as 0, unsigned


def _fmt_p(p) -> str:
    p = _num(p)
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _fmt_short(x) -> str:
    x = _num(x)
    return f"{x:.2f}" if math.isfinite(x) else "n/a"


def _mean_std(r, d: int) -> str:
    return _fmt(r["mean"], d) + (f" ± {_fmt(r['std'], d)}" if math.isfinite(r["std"]) else "")


def _ci(lo, hi, d: int) -> str:
    return f"[{_fmt(lo, d)}, {_fmt(hi, d)}]" if math.isfinite(_num(lo)) and math.isfinite(_num(hi)) else "n/a"


def _decimals(report) -> dict:
    """``(table, metric) -> decimals``, from the size of the metric's condition means (else its differences)."""
    sizes = {}
    for r in report["conditions"]:
        sizes.setdefault((r["table"], r["metric"]), []).append(abs(_num(r["mean"])))
    for r in report["comparisons"]:
        if (r["table"], r["metric"]) not in sizes or not any(map(math.isfinite, sizes[r["table"], r["metric"]])):
            key = (r["table"], r["metric"])
            sizes.setdefault(key, []).extend(abs(_num(r[k])) for k in ("diff_mean", "diff_ci_low", "diff_ci_high"))
    return {k: decimals_for(max((v for v in vs if math.isfinite(v)), default=math.nan)) for k, vs in sizes.items()}


def _n(r) -> str:
    n, total = r.get("n"), r.get("n_seeds")
    return f"{n}/{total}" if total is not None and n is not None and n != total else str(n)


def _at_label(report) -> str:
    return "at the final step" if report.get("final_only") else f"at {report['at']}"


def _metric_title(metric: str, at: str, final_only: bool = False) -> str:
    if final_only:
        return f"{metric} (final step)"
    if at == "max_over_evals":
        from jaxkd.selection import lower_is_better  # the rule summarize_sweep used to pick max or min

        extreme = "minimum" if lower_is_better(metric) else "maximum"
        split = "test-set " if metric.startswith("test/") else ""
        return f"{metric}: {split}{extreme} over evaluations (optimistic)"
    return f"{metric} (at {at})"


def _condition_cells(r, d: int = 4) -> list[str]:
    name = f"{r['condition']} (reference)" if r["kind"] == "teacher" else r["condition"]
    return [name, _mean_std(r, d), _ci(r["ci_low"], r["ci_high"], d), _n(r)]


_CONDITION_HEADER = ["condition", "mean ± std", "95% CI", "n"]


def _comparison_header(rows) -> tuple[list[str], str]:
    """Column names and a one-line description of the tests, from the tests' own keys."""
    tests = sorted({r["test"] for r in rows if r["test"]})
    stats = sorted({r["statistic_kind"] for r in rows if r["statistic_kind"]})
    corr = sorted({r["correction"] for r in rows if r["correction"]})
    effects = sorted({r["effect_size_kind"] for r in rows if r["effect_size_kind"]})
    eff_col = _EFFECT_NAMES[effects[0]][1] if len(effects) == 1 else "effect"
    header = [
        "metric",
        "comparison",
        "diff",
        "95% CI",
        stats[0] if len(stats) == 1 else "statistic",
        "p",
        f"p ({corr[0].capitalize()})" if len(corr) == 1 else "p (corrected)",
        eff_col,
        "n",
    ]
    desc = ", ".join(tests) or "tests"
    if corr:
        desc += f"; p corrected by {'/'.join(c.capitalize() for c in corr)} within each metric and evaluation point"
    if effects:
        desc += f"; effect size {', '.join(_EFFECT_NAMES[e][0] for e in effects)}"
    return header, desc


def _comparison_cells(r, d: int = 4) -> list[str]:
    return [
        r["metric"],
        r["comparison"],
        _fmt(r["diff_mean"], d),
        _ci(r["diff_ci_low"], r["diff_ci_high"], d),
        _fmt_short(r["statistic"]),
        _fmt_p(r["p"]),
        _fmt_p(r["p_adjusted"]),
        _fmt_short(r["effect_size"]),
        str(r["n"]),
    ]


def _legend_text(entry) -> str:
    if isinstance(entry, dict):
        return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in entry.items())
    return str(entry)


def _aligned(header: list[str], rows: list[list[str]], left: int, indent: str = "  ") -> list[str]:
    """Columns padded to one width; the first ``left`` (names) left-aligned, numbers right-aligned."""
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    line = lambda cells: (
        indent
        + "  ".join(  # noqa: E731
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()
    )
    return [line(header)] + [line(r) for r in rows]


def _row_notes(rows) -> list[str]:
    """Each distinct note of ``rows`` (a summary's or a test's ``note``), with the rows it belongs to."""
    by_note = {}
    for r in rows:
        if r.get("note"):
            by_note.setdefault(r["note"], []).append(r.get("condition") or r.get("comparison") or "?")
    return [f"{note} ({', '.join(dict.fromkeys(names))})" for note, names in by_note.items()]


def _tables(report) -> list[str]:
    return list(dict.fromkeys(r["table"] for r in report["conditions"] + report["comparisons"]))


def render_text(report: dict) -> str:
    if report["kind"] == "scalars":
        lines = [f"jaxkd: {report['notes'][0]}"]
        if report["scalars"]:
            width = max(len(k) for k in report["scalars"])
            lines += [f"  {k:<{width}}  {_scalar(v)}" for k, v in report["scalars"].items()]
        return "\n".join(lines) + "\n"
    lines = [
        f"run {report['run']}",
        "mean ± std over seeds; 95% CI of the mean (Student t); n = seeds used (used/total when some diverged)",
        *report["notes"],
    ]
    decimals = _decimals(report)
    for table in _tables(report):
        if table:
            lines += ["", f"== {table} =="]
        for metric in report["metrics"]:
            rows = [r for r in report["conditions"] if r["table"] == table and r["metric"] == metric]
            if rows:
                d = decimals.get((table, metric), 4)
                lines += ["", _metric_title(metric, report["at"], report.get("final_only", False))]
                lines += _aligned(_CONDITION_HEADER, [_condition_cells(r, d) for r in rows], 1)
                lines += [f"  note: {n}" for n in _row_notes(rows)]
        comps = [r for r in report["comparisons"] if r["table"] == table]
        if comps:
            header, desc = _comparison_header(comps)
            lines += ["", f"comparisons {_at_label(report)} ({desc})"]
            cells = [_comparison_cells(r, decimals.get((table, r["metric"]), 4)) for r in comps]
            lines += _aligned(header, cells, 2)
            lines += [f"  note: {n}" for n in _row_notes(comps)]
        legend = report["legend"].get(table)
        if legend:
            lines += ["", "legend: " + "; ".join(f"{k} = {_legend_text(v)}" for k, v in legend.items())]
        if report.get("scope", {}).get(table):
            lines += ["", f"scope: {report['scope'][table]}"]
    return "\n".join(lines) + "\n"


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _md_table(header, rows, left: int) -> list[str]:
    align = ["---" if i < left else "---:" for i in range(len(header))]
    return [_md_row(header), "|" + "|".join(align) + "|", *(_md_row(r) for r in rows)]


def render_markdown(report: dict) -> str:
    if report["kind"] == "scalars":
        lines = [f"_{report['notes'][0]}_", ""]
        if report["scalars"]:
            lines += _md_table(["entry", "value"], [[f"`{k}`", _scalar(v)] for k, v in report["scalars"].items()], 2)
        return "\n".join(lines).rstrip() + "\n"
    lines = [f"Run `{report['run']}`: mean ± std over seeds, 95% CI of the mean (Student t), n = seeds used.", ""]
    lines += [f"- {n}" for n in report["notes"]]
    decimals = _decimals(report)
    for table in _tables(report):
        if table:
            lines += ["", f"### {table}"]
        for metric in report["metrics"]:
            rows = [r for r in report["conditions"] if r["table"] == table and r["metric"] == metric]
            if rows:
                d = decimals.get((table, metric), 4)
                lines += ["", f"#### {_metric_title(metric, report['at'], report.get('final_only', False))}", ""]
                lines += _md_table(_CONDITION_HEADER, [_condition_cells(r, d) for r in rows], 1)
                lines += [f"\nNote: {n}" for n in _row_notes(rows)]
        comps = [r for r in report["comparisons"] if r["table"] == table]
        if comps:
            header, desc = _comparison_header(comps)
            lines += ["", f"#### Comparisons {_at_label(report)} ({desc})", ""]
            lines += _md_table(header, [_comparison_cells(r, decimals.get((table, r["metric"]), 4)) for r in comps], 2)
            lines += [f"\nNote: {n}" for n in _row_notes(comps)]
        legend = report["legend"].get(table)
        if legend:
            lines += ["", "Legend: " + "; ".join(f"`{k}` = {_legend_text(v)}" for k, v in legend.items())]
        if report.get("scope", {}).get(table):
            lines += ["", f"Scope: {report['scope'][table]}"]
    return "\n".join(lines) + "\n"


def _scalar(v) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return "n/a" if v is None else str(v)
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _csv_value(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(v) if isinstance(v, float) else v


def render_csv(report: dict) -> str:
    """One CSV table: ``kind`` is ``teacher``, ``condition`` or ``comparison``; unused cells are empty."""
    buf = io.StringIO()
    if report["kind"] == "scalars":
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["key", "value"])
        writer.writerows([k, _csv_value(v)] for k, v in report["scalars"].items())
        return buf.getvalue()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in report["conditions"] + report["comparisons"]:
        writer.writerow({k: _csv_value(r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def render_json(report: dict) -> str:
    from jaxkd.results import to_json

    return to_json(report) + "\n"


def render(report: dict, fmt: str = "text") -> str:
    """``report`` (from :func:`build_report`) as ``text``, ``csv``, ``json`` or ``markdown``."""
    check_name("format", fmt, FORMATS)
    return {"text": render_text, "csv": render_csv, "json": render_json, "markdown": render_markdown}[fmt](report)
