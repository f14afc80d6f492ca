"""BRECQ for mixquant-lite: BatchNorm folding, AdaRound, learned-step activation quantization and
block reconstruction, driven by a per-layer bit-width plan.

The public entry point is :func:`brecq` (re-exported as ``mixquant_lite.brecq``). The subpackage
is called ``recon`` so that ``mixquant_lite.brecq`` can be the function.
"""
from .act_quant import ActQuantizer
from .adaround import AdaRoundQuantizer
from .api import BrecqReport, UnitResult, brecq, plan_bits, resolve_bits
from .block_recon import LinearTempDecay, find_units, quantizable_layer_names
from .config import BrecqConfig
from .folding import check_folding, fold_bn, fold_conv_bn

__all__ = [
    "brecq",
    "BrecqConfig",
    "BrecqReport",
    "plan_bits",
    "UnitResult",
    "resolve_bits",
    "fold_bn",
    "fold_conv_bn",
    "check_folding",
    "AdaRoundQuantizer",
    "ActQuantizer",
    "LinearTempDecay",
    "find_units",
    "quantizable_layer_names",
]
