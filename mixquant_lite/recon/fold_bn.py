"""Old module path of :mod:`mixquant_lite.recon.folding` (kept so ``from
mixquant_lite.recon.fold_bn import fold_bn`` keeps working). New code:
``from mixquant_lite.recon.folding import fold_bn``."""
from .folding import check_folding, fold_bn, fold_conv_bn

__all__ = ["fold_bn", "fold_conv_bn", "check_folding"]
