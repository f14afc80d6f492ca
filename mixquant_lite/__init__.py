"""mixquant-lite: MixQuant mixed-precision post-training quantization, small and readable.

Definitions: ``docs/method.md`` (quantizer, QE, the MixQuant rule, the budget plan), after
Kloberdanz & Le, arXiv 2309.17341. Core modules: :mod:`.quant` (the quantizer), :mod:`.layers`
(which layers and blocks), :mod:`.table` (QE tables), :mod:`.search` (MixQuant rule and budget
plans), :mod:`.plan` (``BitPlan``), :mod:`.recon` (BRECQ), :mod:`.export` (integer export).
The notebooks' helpers live in :mod:`mixquant_lite.tutorial`; the core imports none of it.
"""
# The old module paths mixquant_lite.qe_table (now .table) are loaded first, so that the
# package attribute of that name is the function bound below, and stays so.
from . import qe_table as _qe_table_module  # noqa: F401
from .evaluate import evaluate
from .export import export, load_quantized
from .layers import quantizable_layers, register_block
from .plan import BitPlan
from .quant import (
    check_bits,
    choose_qparams,
    dequantize_affine,
    fake_quantize,
    fake_quantize_affine,
    qe,
    qparams,
    quantize,
    quantize_affine,
)
from .recon import BrecqConfig, BrecqReport, brecq, fold_bn
from .search import mixquant, plan_for_budget, qem_for_budget, sweep
from .table import QETable, qe_table

__version__ = "0.1.0"
__all__ = [
    "BitPlan",
    "BrecqConfig",
    "BrecqReport",
    "QETable",
    "brecq",
    "check_bits",
    "choose_qparams",
    "dequantize_affine",
    "evaluate",
    "export",
    "fake_quantize",
    "fake_quantize_affine",
    "fold_bn",
    "load_quantized",
    "mixquant",
    "plan_for_budget",
    "qe",
    "qe_table",
    "qem_for_budget",
    "qparams",
    "quantizable_layers",
    "quantize",
    "quantize_affine",
    "register_block",
    "sweep",
]
