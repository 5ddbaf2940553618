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


def bar_with_ci(ax, labels, summaries, *, ylabel, reference=None, reference_label=None):
    """Bars at the seed mean with 95% CI error bars; ``summaries`` from :func:`jaxkd.stats.summarize`."""
    mean = np.array([s["mean"] for s in summaries])
    # With one seed the CI is undefined (NaN): draw the bar without an error bar.
    lo = np.nan_to_num(mean - np.array([s["ci_low"] for s in summaries], float))
    hi = np.nan_to_num(np.array([s["ci_high"] for s in summaries], float) - mean)
    x = np.arange(len(labels))
    ax.bar(x, mean, yerr=np.stack([lo, hi]), capsize=3, color="C0", alpha=0.8)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label)
        ax.legend(loc="lower right")
    top = np.nanmax(mean + hi) if reference is None else max(np.nanmax(mean + hi), reference)
    bottom = np.nanmin(mean - lo)
    span = top - bottom
    ax.set_ylim(bottom - 0.5 * span - 1e-3, top + 0.3 * span + 1e-3)


def curves_with_band(ax, steps, curves_by_label: dict, *, ylabel, xlabel="step"):
    """Mean curve over seeds with a ±1 std band; each value is ``[seeds, evals]``."""
    for i, (label, curves) in enumerate(curves_by_label.items()):
        m, s = np.nanmean(curves, 0), np.nanstd(curves, 0)
        ax.plot(steps, m, color=f"C{i}", label=label, lw=1.2)
        ax.fill_between(steps, m - s, m + s, color=f"C{i}", alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
