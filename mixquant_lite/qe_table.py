"""Old module path of :mod:`mixquant_lite.table` (kept so ``from mixquant_lite.qe_table import
qe_table`` keeps working). New code: ``from mixquant_lite.table import QETable, qe_table``.

The package attribute ``mixquant_lite.qe_table`` is the *function*; this module is reachable as
``sys.modules["mixquant_lite.qe_table"]`` and through ``from mixquant_lite.qe_table import ...``.
"""
from .table import QUANTIZABLE_TYPES, QETable, qe_table, quantizable_layers

__all__ = ["QETable", "qe_table", "quantizable_layers", "QUANTIZABLE_TYPES"]
