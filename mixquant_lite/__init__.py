"""mixquant-lite: MixQuant mixed-precision post-training quantization, small and readable.

Definitions follow ``shared/docs/mixquant-spec.md`` (Kloberdanz & Le, arXiv 2309.17341).
"""
from .evaluate import evaluate
from .plan import BitPlan
from .qe_table import QETable, qe_table, quantizable_layers
from .quant import check_bits, qe, qparams, quantize
from .recon import BrecqReport, brecq, fold_bn
from .search import mixquant, plan_for_budget, qem_for_budget, sweep

__version__ = "0.1.0"
__all__ = [
    "BitPlan",
    "BrecqReport",
    "QETable",
    "brecq",
    "check_bits",
    "evaluate",
    "fold_bn",
    "mixquant",
    "plan_for_budget",
    "qe",
    "qe_table",
    "qem_for_budget",
    "qparams",
    "quantizable_layers",
    "quantize",
    "sweep",
]
