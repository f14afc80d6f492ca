"""Helpers of the tutorial notebooks, split by topic; the core package imports none of this.

- :mod:`.helpers`: seeding, looking a layer up, counting weights.
- :mod:`.experiments`: sensitivity experiments (one layer at a time, random plans, searches at
  equal budgets, MixQuant's lowering order).
- :mod:`.correlation`: tables of Spearman correlations with bootstrap intervals.
- :mod:`.qe_law`: measured ``QE_b / QE_8`` next to the ``s^2/12`` prediction.
- :mod:`.timing`: brute-force search, a naive QE table, run time against size.
- :mod:`.results_tables`: reading and comparing ``mixquant-lite reproduce`` tables.
- :mod:`.plotting`: the figures (imports matplotlib and seaborn; import it explicitly).
- :mod:`.widgets`: the notebooks' interactive controls (ipywidgets imported lazily).
- :mod:`.stats`: paired tests (exact McNemar), clustered bootstraps, control plans, the exact
  ``s^2/12`` law; :mod:`.readings`: the alternative reading of the MixQuant rule;
  :mod:`.checks`: the exercises' check cells (import these submodules explicitly).

Evaluation lives in the core: :func:`mixquant_lite.evaluation.evaluate`,
:func:`~mixquant_lite.evaluation.correct_mask`, :func:`~mixquant_lite.evaluation.accuracy_and_loss`.
"""
from ..evaluation import accuracy_and_loss
from .correlation import correlation_table, describe_correlation
from .experiments import (
    compare_at_budgets,
    evaluate_plans,
    lowering_order,
    random_plans,
    single_layer_sensitivity,
)
from .helpers import count_weights, get_layer, seed_everything
from .qe_law import qe_matrix, qe_ratio_frame
from .results_tables import (
    act_label,
    matched_comparison,
    method_label,
    read_results,
    results_dir,
    summarize_gaps,
    summarize_pairs,
    uniform_gap,
    unpaired_rows,
    with_search_columns,
)
from .stats import cluster_bootstrap_corr, law_qe_ratio
from .timing import (
    ExhaustiveResult,
    exhaustive_scaling,
    exhaustive_search,
    linear_fit,
    naive_qe_table,
    time_call,
    time_qe_tables,
)

__all__ = [
    "seed_everything", "get_layer", "count_weights", "accuracy_and_loss",
    "single_layer_sensitivity", "random_plans", "evaluate_plans", "compare_at_budgets",
    "lowering_order", "cluster_bootstrap_corr", "law_qe_ratio", "correlation_table",
    "describe_correlation", "qe_matrix", "qe_ratio_frame", "ExhaustiveResult", "exhaustive_search",
    "exhaustive_scaling", "naive_qe_table", "linear_fit", "time_call", "time_qe_tables",
    "results_dir", "read_results", "matched_comparison", "act_label", "method_label",
    "with_search_columns", "summarize_pairs", "unpaired_rows", "uniform_gap", "summarize_gaps",
]
