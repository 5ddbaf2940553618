"""Shared matplotlib style and figure helpers (headless: Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 9,
    "legend.frameon": False,
}


def figure(ncols=1, nrows=1, width=4.2, height=3.2):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    with plt.rc_context(STYLE):
        fig.tight_layout()
        fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def points_with_ci(ax, labels, summaries, *, ylabel, reference=None, reference_label=None, bounds=None):
    """Seed means as points with 95% CI bars; ``summaries`` from :func:`jaxkd.stats.summarize`.

    Points, not bars: the y axis is fitted to the intervals (a bar's length
    would exaggerate differences on a cut axis), and a note in the corner says
    the axis does not start at zero. For a bounded metric (``bounds=(lo, hi)``,
    or the ``"bounds"`` a summary carries) the bars are clipped to the bounds
    and the axis stays within them (plus a small margin): a two-seed t
    interval of an accuracy can reach far outside [0, 1].
    """
    if bounds is None:
        bounds = next((s["bounds"] for s in summaries if s.get("bounds") is not None), None)
    mean = np.array([s["mean"] for s in summaries], float)
    ci_low = np.array([s["ci_low"] for s in summaries], float)
    ci_high = np.array([s["ci_high"] for s in summaries], float)
    if bounds is not None:
        ci_low, ci_high = np.clip(ci_low, *bounds), np.clip(ci_high, *bounds)
    # With one seed the CI is undefined (NaN): draw the point without an error bar.
    lo = np.nan_to_num(mean - ci_low)
    hi = np.nan_to_num(ci_high - mean)
    x = np.arange(len(labels))
    ax.errorbar(x, mean, yerr=np.stack([lo, hi]), fmt="o", ms=5, capsize=4, color="C0", lw=1.2)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel(ylabel)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label)
        ax.legend(loc="lower right")
    top = np.nanmax(mean + hi) if reference is None else max(np.nanmax(mean + hi), reference)
    bottom = np.nanmin(mean - lo)
    span = top - bottom
    bottom, top = bottom - 0.3 * span - 1e-3, top + 0.2 * span + 1e-3
    if bounds is not None:
        margin = 0.03 * (bounds[1] - bounds[0])
        bottom, top = max(bottom, bounds[0] - margin), min(top, bounds[1] + margin)
    ax.set_ylim(bottom, top)
    if ax.get_ylim()[0] > 0:
        ax.text(
            0.01,
            0.01,
            "axis does not start at 0",
            transform=ax.transAxes,
            fontsize=6,
            color="0.4",
            va="bottom",
            ha="left",
        )


def curves_with_band(ax, steps, curves_by_label: dict, *, ylabel, xlabel="step"):
    """Mean curve over seeds with a ±1 std band; each value is ``[seeds, evals]``."""
    for i, (label, curves) in enumerate(curves_by_label.items()):
        m, s = np.nanmean(curves, 0), np.nanstd(curves, 0)
        ax.plot(steps, m, color=f"C{i}", label=label, lw=1.2)
        ax.fill_between(steps, m - s, m + s, color=f"C{i}", alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
