"""Numbers that the README and docs quote from a preset's run, regenerated from its ``summary.json``.

Usage::

    jaxkd docs --check     # exit 1, listing every region whose numbers differ from the runs' summaries
    jaxkd docs --update    # rewrite every region from results/<experiment>/summary.json
    jaxkd docs --runs      # the runs the documents quote: experiment, preset, results directory
    make numbers           # runs every quoted preset (`--runs`), then `jaxkd docs --update`

Every such number sits in a **generated region** of the markdown, bound to one run:

- inline, ``<!--n RUN PATH FORMAT...-->0.963<!--/n-->``: one value, or
  ``<!--n RUN [in=PREFIX] TEXT-->...<!--/n-->``, a short text whose ``{PATH FORMAT...}`` fields are
  values (``<!--n digits_kd in=conditions.ce.test/acc.selected {mean .3f} ± {std .3f}-->...<!--/n-->``);
- a block of rows, for tables::

      <!--rows RUN [in=PREFIX] ROW[=LABEL] ...
      | condition | acc |
      |---|---:|
      | {$} | {conditions.$.test/acc.selected.mean .3f} |
      -->
      (generated: the template's lines, those naming ``$`` once per ROW)
      <!--/rows-->

``RUN`` is an experiment name, read from ``results/<experiment>/summary.json`` (what ``make demo``
and ``make numbers`` write with the ``default`` preset), or ``EXPERIMENT:PRESET``, read from
``results/<experiment>/<preset>`` (``jaxkd run``'s default ``--out``).

``PATH`` walks the summary's keys joined by ``.``; keys may hold dots, slashes or spaces
(``conditions.kd_a0.5_T4.test/acc``; quote a path with spaces: ``"comparisons.test/acc.selected.kd -
ce.p_holm"``). An integer indexes a list. A segment with ``*`` is a pattern over the keys at that
level (``kd_a* - base``; ``*`` alone also takes every list element) and needs a reducer: ``min``,
``max``, ``len``, ``count<X`` or ``count>X`` (how many values lie below or above X, e.g. Holm
p-values below 0.05). In a rows block ``$`` in a path is the row's key and ``{$}`` its label (the key
unless ``KEY=LABEL``); ``in=PREFIX`` is prepended to every path of a region.

``FORMAT`` is one Python format spec (``.3f``, ``+.1f``, ``.2g``, ``d``) and any of: ``x100`` (scale,
here to percentage points), ``minus`` (a typographic minus, U+2212), ``sci`` (exponents without
padding: ``2e-5``, not ``2e-05``), ``below=X`` (``< X`` for a value below X, else ``= value``: p-values
too small to print), a reducer. A JSON ``null`` or a NaN prints as ``n/a``. A boolean prints as
``true``/``false`` (spec ``s``), or with ``words=YES/NO`` as one of two phrases
(``{claim_test.holds_at_0.05 "words=significant/not significant"}``), so prose that reads a test
is generated with it.

``--check`` compares numbers, not characters: each number of a region may differ from the freshly
rendered one by one unit in its last printed digit (float round-off on another CPU moves a mean by
that much), every other character must be equal. ``--update`` writes the rendering exactly.
A marker never starts a line: markdown would end the paragraph there (checked).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import math
import os
import re
import shlex

from jaxkd.errors import ConfigError

DEFAULT_DOCUMENTS = ("README.md", "docs/*.md")
RESULTS_ROOT = "results"

_INLINE = re.compile(r"<!--\s*n\s+(?P<spec>.*?)\s*-->(?P<body>.*?)<!--\s*/n\s*-->")
_ROWS = re.compile(
    r"<!--\s*rows\s+(?P<head>[^\n]*)\n(?P<template>.*?)\n[ \t]*-->[ \t]*\n(?P<body>.*?)<!--\s*/rows\s*-->", re.S
)
_FIELD = re.compile(r"\{([^{}]*)\}")
_NUMBER = re.compile(r"[+\-\u2212]?(?:\d+\.?\d*|\.\d+)(?:[eE][+\-\u2212]?\d+)?")
_CODE = re.compile(r"^([ \t]*)(```|~~~).*?^\1\2[^\n]*$|`[^`\n]+`", re.S | re.M)
_MINUS = "\u2212"
_REDUCER = re.compile(r"min|max|len|count[<>][-+]?\d*\.?\d+(?:e-?\d+)?")


@dataclasses.dataclass(frozen=True)
class Region:
    """One generated region of a document: where it is, which run it reads, what it says now."""

    kind: str  # "n" (inline) or "rows"
    run: str  # as written: EXPERIMENT or EXPERIMENT:PRESET
    spec: str  # the marker's text after the run (inline) or the whole template (rows)
    start: int  # body span in the document
    end: int
    body: str
    line: int  # 1-based line of the opening marker


# --- runs ----------------------------------------------------------------------------------------------------------


def run_directory(run: str, results_root: str = RESULTS_ROOT) -> str:
    """The results directory of ``EXPERIMENT`` (``default`` preset) or ``EXPERIMENT:PRESET``."""
    import experiments
    from jaxkd.errors import check_name

    experiment, _, preset = run.partition(":")
    check_name("experiment", experiment, experiments.EXPERIMENTS)
    if preset:
        check_name("preset", preset, tuple(experiments.get(experiment).PRESETS))
        return os.path.join(results_root, experiment, preset)
    return os.path.join(results_root, experiment)


def run_preset(run: str) -> tuple[str, str]:
    """``(experiment, preset)`` of a region's run."""
    experiment, _, preset = run.partition(":")
    return experiment, preset or "default"


# --- values --------------------------------------------------------------------------------------------------------


def resolve(node, path: str) -> list:
    """The values at ``path``: ``.``-joined keys; a segment with ``*`` is a pattern (``fnmatch``) over the keys.

    One value unless a pattern is used (its keys that lack the rest of the path are left out). A key
    may contain dots: at each level the longest key that ``path`` starts with is tried first.
    """
    if path == "":
        return [node]
    head, _, rest = path.partition(".")
    if "*" in head:
        if isinstance(node, dict):
            children = [v for k, v in node.items() if fnmatch.fnmatchcase(str(k), head)]
        elif isinstance(node, list) and head == "*":
            children = node
        else:
            raise KeyError(path)
        found = []
        for child in children:  # a child without the rest of the path is left out
            try:
                found += resolve(child, rest)
            except KeyError:
                continue
        if not found:
            raise KeyError(path)
        return found
    if isinstance(node, dict):
        keys = sorted((k for k in node if path == k or path.startswith(k + ".")), key=len, reverse=True)
        for k in keys:
            try:
                return resolve(node[k], path[len(k) + 1 :])
            except KeyError:
                continue
        raise KeyError(path)
    if isinstance(node, list) and head.lstrip("-").isdigit() and -len(node) <= int(head) < len(node):
        return resolve(node[int(head)], rest)
    raise KeyError(path)


def _reduce(values: list, how: str):
    """``min``, ``max``, ``len`` or ``count<X`` / ``count>X`` of a pattern's values (None and NaN left out)."""
    finite = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if how == "len":
        return len(values)
    if how in ("min", "max"):
        return (min if how == "min" else max)(finite) if finite else None
    op, bound = how[5], float(how[6:])
    return sum(1 for v in finite if (v < bound if op == "<" else v > bound))


def format_value(value, options: list[str]) -> str:
    """``value`` rendered by a marker's FORMAT tokens (see the module docstring)."""
    if isinstance(value, bool) and any(o.startswith("words=") for o in options):
        true, _, false = next(o for o in options if o.startswith("words="))[6:].partition("/")
        return true if value else false
    spec, scale, minus, sci, below = None, 1.0, False, False, None
    for opt in options:
        if opt.startswith("below="):
            below = opt[6:]
        elif opt == "minus":
            minus = True
        elif opt == "sci":
            sci = True
        elif re.fullmatch(r"x\d+(\.\d*)?", opt):
            scale = float(opt[1:])
        elif _REDUCER.fullmatch(opt):
            continue
        elif spec is None:
            spec = opt
        else:
            raise ValueError(f"two format specs, {spec!r} and {opt!r}")
    if spec is None:
        raise ValueError("no format spec (e.g. .3f)")
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or isinstance(value, str):
        return format(str(value).lower() if isinstance(value, bool) else value, spec)
    if below is not None:
        if value < float(below):
            return f"< {below}"
        return "= " + format_value(value, [o for o in options if not o.startswith("below=")])
    text = format(value * scale if scale != 1.0 else value, spec)
    if sci:
        text = re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text)
    if minus:
        text = text.replace("-", _MINUS)
    return text


def render_field(summary: dict, field: str, row: str | None = None, prefix: str = "") -> str:
    """One value of ``summary`` rendered: ``field`` is ``PATH FORMAT...`` (``$`` = ``row`` in the path)."""
    try:
        tokens = shlex.split(field)
    except ValueError as err:
        raise ValueError(f"cannot read {field!r} ({err})") from None
    if not tokens:
        raise ValueError("an empty field")
    path, options = tokens[0], tokens[1:]
    if row is not None:
        path = path.replace("$", row)
    full = f"{prefix}.{path}" if prefix else path
    try:
        values = resolve(summary, full)
    except KeyError:
        raise ValueError(f"summary.json has no {full!r}") from None
    reducers = [o for o in options if _REDUCER.fullmatch(o)]
    if "*" in full or reducers:
        if len(reducers) != 1 or "*" not in full:
            raise ValueError(
                f"{full!r}: a pattern (*) takes one of min, max, len, count<X, count>X, and only a pattern"
            )
        value = _reduce(values, reducers[0])
    else:
        value = values[0]
        if isinstance(value, (dict, list)):
            raise ValueError(f"{full!r} is a {type(value).__name__}, not a number: name a key below it")
    return format_value(value, options)


def _rows_head(head: str) -> tuple[str, str, list[tuple[str, str]]]:
    """``(run, prefix, [(key, label)])`` of a rows block's first line."""
    tokens = shlex.split(head)
    if not tokens:
        raise ValueError("a rows block names no run")
    run, prefix, rows = tokens[0], "", []
    for tok in tokens[1:]:
        if tok.startswith("in="):
            prefix = tok[3:]
        else:
            key, _, label = tok.partition("=")
            rows.append((key, label or key))
    if not rows:
        raise ValueError("a rows block names no rows")
    return run, prefix, rows


def render_region(region: Region, summary: dict) -> str:
    """The text a region should hold, from its run's summary."""
    if region.kind == "n":
        m = re.match(r'in=("[^"]*"|\S+)\s+', region.spec)
        prefix, rest = (m.group(1).strip('"'), region.spec[m.end() :]) if m else ("", region.spec)
        if "{" not in rest:
            return render_field(summary, rest, prefix=prefix)
        return _FIELD.sub(lambda f: render_field(summary, f.group(1), prefix=prefix), rest)
    _, prefix, rows = _rows_head(region.spec.split("\n", 1)[0])
    out = []
    for line in region.spec.split("\n")[1:]:
        fields = _FIELD.findall(line)
        per_row = any(f == "$" or "$" in (f.split() or [""])[0] for f in fields)
        for key, label in rows if per_row else [(None, None)]:
            out.append(
                _FIELD.sub(
                    lambda m, key=key, label=label: (
                        label if m.group(1) == "$" else render_field(summary, m.group(1), key, prefix)
                    ),
                    line,
                )
            )
    return "\n".join(out) + "\n"


# --- documents -----------------------------------------------------------------------------------------------------


def _mask_code(text: str) -> str:
    """``text`` with code blocks and spans blanked (same length): markers shown as code are not regions."""
    return _CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def find_regions(text: str) -> list[Region]:
    """Every generated region of a markdown text, in order; a ``ValueError`` names a malformed one."""
    regions, masked = [], _mask_code(text)
    for m in _ROWS.finditer(masked):
        head = text[m.start("head") : m.end("head")]
        run = (shlex.split(head) or [""])[0]
        spec = head + "\n" + text[m.start("template") : m.end("template")]
        line = text.count("\n", 0, m.start()) + 1
        regions.append(
            Region("rows", run, spec, m.start("body"), m.end("body"), text[m.start("body") : m.end("body")], line)
        )
    for m in _INLINE.finditer(masked):
        line = text.count("\n", 0, m.start()) + 1
        if any(r.start <= m.start() < r.end for r in regions):
            continue  # a rows block's generated body holds no markers of its own
        run, _, spec = text[m.start("spec") : m.end("spec")].partition(" ")
        if "--" in spec:
            raise ValueError(f"line {line}: a marker holds '--', which ends an HTML comment early in markdown")
        line_start = text.rfind("\n", 0, m.start()) + 1
        if not text[line_start : m.start()].strip():
            raise ValueError(
                f"line {line}: a marker starts the line, so markdown would end the paragraph there; "
                "move a word in front of it"
            )
        body = text[m.start("body") : m.end("body")]
        regions.append(Region("n", run, spec.strip(), m.start("body"), m.end("body"), body, line))
    opened = len(re.findall(r"<!--\s*n\s", masked)) + len(re.findall(r"<!--\s*rows\s", masked))
    if opened != len(_INLINE.findall(masked)) + len(_ROWS.findall(masked)):
        raise ValueError("a marker is not closed (<!--n ...-->VALUE<!--/n--> or <!--rows ...--> ... <!--/rows-->)")
    return sorted(regions, key=lambda r: r.start)


def _unit(number: str) -> float:
    """One unit in the last printed digit of ``number`` (``0.963`` -> 0.001, ``2e-5`` -> 1e-5)."""
    mantissa, _, exponent = number.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent.replace(_MINUS, "-") or 0) - decimals)


def _float(number: str) -> float:
    return float(number.replace(_MINUS, "-"))


def same_numbers(documented: str, rendered: str) -> bool:
    """Whether two renderings agree: equal text, each number within one unit of its last printed digit."""
    if _NUMBER.split(documented) != _NUMBER.split(rendered):
        return False
    a, b = _NUMBER.findall(documented), _NUMBER.findall(rendered)
    if len(a) != len(b):
        return False
    return all(abs(_float(x) - _float(y)) <= max(_unit(x), _unit(y)) * (1 + 1e-9) for x, y in zip(a, b))


@dataclasses.dataclass
class Outcome:
    """What checking or updating documents found."""

    differ: list[str] = dataclasses.field(default_factory=list)  # one line per region that differs
    missing: dict = dataclasses.field(default_factory=dict)  # results dir -> number of regions not read
    broken: list[str] = dataclasses.field(default_factory=list)  # malformed markers, unknown paths
    changed: dict = dataclasses.field(default_factory=dict)  # document -> regions rewritten
    regions: int = 0

    @property
    def ok(self) -> bool:
        return not (self.differ or self.missing or self.broken)


def document_paths(paths=None, root: str = ".") -> list[str]:
    """The documents to read: ``paths``, or the README and ``docs/*.md`` under ``root``."""
    if paths:
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise ConfigError(f"no such document: {', '.join(missing)}")
        return list(paths)
    found = [
        os.path.normpath(p) for pattern in DEFAULT_DOCUMENTS for p in sorted(glob.glob(os.path.join(root, pattern)))
    ]
    if not found:
        raise ConfigError(
            f"no README.md or docs/*.md under {os.path.abspath(root)}; run from the repository root or name the files"
        )
    return found


def documented_runs(paths) -> list[str]:
    """Every run the documents' regions read, in first-seen order."""
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            try:
                regions = find_regions(f.read())
            except ValueError as err:
                raise ConfigError(f"{path}: {err}") from None
        for r in regions:
            run_directory(r.run)  # refuses an unknown experiment or preset
            if r.run not in runs:
                runs.append(r.run)
    return runs


def _load(run: str, results_root: str, cache: dict):
    """The summary of ``run`` (None when it has not been run), read once."""
    from jaxkd.report import load_run

    directory = run_directory(run, results_root)
    if directory not in cache:
        cache[directory] = load_run(directory) if os.path.isfile(os.path.join(directory, "summary.json")) else None
    return directory, cache[directory]


def process(text: str, results_root: str, name: str, outcome: Outcome, cache: dict, runs=None) -> str:
    """``text`` with every region re-rendered from its run (regions of other runs, or broken ones, kept).

    Records in ``outcome`` each region that differs from its rendering (beyond the tolerance), each
    run with no summary and each malformed region. ``runs``: only regions of these runs.
    """
    try:
        regions = find_regions(text)
    except ValueError as err:
        outcome.broken.append(f"{name}: {err}")
        return text
    pieces, last = [], 0
    for region in regions:
        where = f"{name}:{region.line}"
        if runs is not None and region.run not in runs:
            continue
        try:
            directory, summary = _load(region.run, results_root, cache)
        except ConfigError as err:
            outcome.broken.append(f"{where}: {err}")
            continue
        outcome.regions += 1
        if summary is None:
            outcome.missing[directory] = outcome.missing.get(directory, 0) + 1
            continue
        try:
            new = render_region(region, summary)
        except ValueError as err:
            outcome.broken.append(f"{where}: {region.run}: {err}")
            continue
        if not same_numbers(region.body, new):
            outcome.differ.append(_difference(where, region, new))
        if new != region.body:
            outcome.changed[name] = outcome.changed.get(name, 0) + 1
        pieces += [text[last : region.start], new]
        last = region.end
    return "".join(pieces) + text[last:]


def _difference(where: str, region: Region, new: str) -> str:
    if region.kind == "n":
        return f"{where}: {region.run} {region.spec}: documents {region.body}, the run gives {new}"
    old_lines, new_lines = region.body.splitlines(), new.splitlines()
    pairs = [(a, b) for a, b in zip(old_lines, new_lines) if not same_numbers(a, b)]
    if len(old_lines) != len(new_lines):
        pairs.append((f"{len(old_lines)} lines", f"{len(new_lines)} lines"))
    shown = "".join(f"\n    documents: {a}\n    the run:   {b}" for a, b in pairs)
    return f"{where}: {region.run} rows block, {len(pairs)} line(s) differ:{shown}"


def check_documents(paths, results_root: str = RESULTS_ROOT, runs=None) -> Outcome:
    """Compare every region of ``paths`` with its run's summary; nothing is written."""
    outcome, cache = Outcome(), {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            process(f.read(), results_root, path, outcome, cache, runs)
    return outcome


def update_documents(paths, results_root: str = RESULTS_ROOT, runs=None) -> Outcome:
    """Rewrite every region of ``paths`` whose run has a summary; regions without one are kept and listed."""
    outcome, cache = Outcome(), {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = process(text, results_root, path, outcome, cache, runs)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
    return outcome


def describe(outcome: Outcome, *, updated: bool) -> tuple[list[str], str]:
    """What ``jaxkd docs`` prints: the problems (one line each, for stderr) and a closing line."""
    problems = list(outcome.broken) + ([] if updated else outcome.differ)
    for directory, n in outcome.missing.items():
        problems.append(
            f"{directory}/summary.json does not exist: {n} region(s) not {'updated' if updated else 'checked'}; "
            "`make numbers` runs every documented preset"
        )
    if updated:
        changed = ", ".join(f"{p} ({n})" for p, n in outcome.changed.items()) or "none"
        return problems, f"{outcome.regions} region(s) read; rewritten: {changed}"
    if problems:
        hint = "; `jaxkd docs --update` rewrites the regions that differ" if outcome.differ else ""
        return problems, f"{len(problems)} problem(s) in {outcome.regions} region(s){hint}"
    return problems, f"{outcome.regions} region(s) match their runs"
