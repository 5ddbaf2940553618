"""Explanations for the zoo: integrated gradients, LRP, scores against evidence masks, and agreement between models.

``docs/attribution.md`` states the conventions (what is explained, signs,
which rule applies to which layer in each composite, how scores are defined).

Modules: :mod:`~jaxkd.attribution.outputs` (the explained output),
:mod:`~jaxkd.attribution.ig` (integrated gradients), :mod:`~jaxkd.attribution.canonical`
(models as explicit layer graphs), :mod:`~jaxkd.attribution.propagation` (rules,
composites, the relevance pass), :mod:`~jaxkd.attribution.scores` (against
masks), :mod:`~jaxkd.attribution.agreement` (between heatmaps; pixel flipping),
:mod:`~jaxkd.attribution.members` (over the members of an ensemble).
"""

from jaxkd.attribution.agreement import (
    average_ranks,
    heatmap_agreement,
    pearson,
    pixel_flipping,
    pool_heatmap,
    spearman,
    topk_overlap,
)
from jaxkd.attribution.canonical import Network, canonize
from jaxkd.attribution.ig import METHODS as IG_METHODS
from jaxkd.attribution.ig import IGResult, blurred, ig_nodes, integrated_gradients, uniform_noise
from jaxkd.attribution.members import (
    explain,
    explain_ensemble,
    flip_ensemble,
    normalised_inputs,
    randomized_ensemble,
    summarize_members,
)
from jaxkd.attribution.outputs import OUTPUTS, explained_output, output_fn, output_selector, runner_up
from jaxkd.attribution.propagation import BASE, COMPOSITES, RULES, box_bounds, lrp, relevance_flow, split_sum, stabilize
from jaxkd.attribution.scores import (
    edge_map,
    evidence_scores,
    heatmap,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)

__all__ = [
    "BASE",
    "COMPOSITES",
    "IG_METHODS",
    "IGResult",
    "Network",
    "OUTPUTS",
    "RULES",
    "heatmap_agreement",
    "average_ranks",
    "blurred",
    "box_bounds",
    "canonize",
    "edge_map",
    "evidence_scores",
    "explain",
    "explain_ensemble",
    "explained_output",
    "flip_ensemble",
    "heatmap",
    "ig_nodes",
    "integrated_gradients",
    "lrp",
    "normalised_inputs",
    "output_fn",
    "output_selector",
    "randomized_ensemble",
    "pearson",
    "pixel_flipping",
    "pointing_game",
    "pool_heatmap",
    "relevance_mass_accuracy",
    "relevance_flow",
    "relevance_rank_accuracy",
    "runner_up",
    "spearman",
    "split_sum",
    "stabilize",
    "summarize_members",
    "topk_overlap",
    "uniform_noise",
]
