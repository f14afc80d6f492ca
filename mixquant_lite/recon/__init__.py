"""BRECQ for mixquant-lite: BatchNorm folding, AdaRound, learned-step activation quantization and
block reconstruction, driven by a per-layer bit-width plan.

The public entry point is :func:`brecq` (re-exported as ``mixquant_lite.brecq``). The subpackage
is called ``recon`` so that ``mixquant_lite.brecq`` can be the function.
"""
# The old module path .fold_bn (now .folding) is loaded before the function of the same name
# is bound below, so that the subpackage attribute stays the function.
from . import fold_bn as _fold_bn_module  # noqa: F401
from .act_quant import ActQuantizer
from .adaround import AdaRoundQuantizer, weight_qparams
from .api import DEFAULTS, BrecqReport, UnitResult, brecq, plan_bits, resolve_bits
from .block_recon import LinearTempDecay, find_units, quantizable_layer_names
from .config import BrecqConfig
from .folding import check_folding, fold_bn, fold_conv_bn

__all__ = [
    "brecq",
    "BrecqConfig",
    "BrecqReport",
    "plan_bits",
    "UnitResult",
    "DEFAULTS",
    "resolve_bits",
    "fold_bn",
    "fold_conv_bn",
    "check_folding",
    "AdaRoundQuantizer",
    "weight_qparams",
    "ActQuantizer",
    "LinearTempDecay",
    "find_units",
    "quantizable_layer_names",
]
