"""mixquant-lite: MixQuant mixed-precision post-training quantization, small and readable.

Definitions: ``docs/method.md`` (quantizer, QE, the MixQuant rule, the budget plan), after
Kloberdanz & Le, arXiv 2309.17341. Core modules: :mod:`.quant` (the quantizer), :mod:`.layers`
(which layers and blocks), :mod:`.table` (QE tables), :mod:`.search` (MixQuant rule and budget
plans), :mod:`.plan` (``BitPlan``), :mod:`.stats` (paired tests), :mod:`.evaluation`,
:mod:`.sensitivity`, :mod:`.gptq` (GPTQ), :mod:`.groups` (per-group grids and
storage bits), :mod:`.packing` (integer export), :mod:`.validate` (argument checks).

Three wings on top of the core, which imports none of them: :mod:`.recon` (BRECQ),
:mod:`.zoo` (data, models, training, testbeds), :mod:`.reproduce` (the results-table pipeline)
and :mod:`.tutorial` (the notebooks' helpers); :mod:`.cli` is the command line.
``mixquant_lite.export`` and ``mixquant_lite.evaluate`` are the functions (their modules are
:mod:`.packing` and :mod:`.evaluation`).
"""
from .evaluation import evaluate
from .gptq import GPTQConfig, GPTQReport, gptq
from .layers import quantizable_layers, register_block
from .packing import export, load_quantized
from .plan import BitPlan
from .qspec import IntegerWeight, QuantSpec
from .quant import (
    check_bits,
    choose_qparams,
    dequantize_affine,
    fake_quantize,
    fake_quantize_affine,
    qe,
    quantize_affine,
)
from .recon import BrecqConfig, BrecqReport, brecq, fold_bn
from .search import mixquant, plan_for_budget, qem_for_budget, sweep
from .table import QETable, qe_table

__version__ = "0.2.0"
__all__ = [
    "BitPlan",
    "IntegerWeight",
    "QuantSpec",
    "BrecqConfig",
    "BrecqReport",
    "GPTQConfig",
    "GPTQReport",
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
    "gptq",
    "load_quantized",
    "mixquant",
    "plan_for_budget",
    "qe",
    "qe_table",
    "qem_for_budget",
    "quantizable_layers",
    "quantize_affine",
    "register_block",
    "sweep",
]
