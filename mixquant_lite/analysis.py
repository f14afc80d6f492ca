"""Old module path of the notebooks' helpers, now :mod:`mixquant_lite.tutorial` (split by topic).

Kept so that ``from mixquant_lite.analysis import ...`` keeps working; new code imports from
``mixquant_lite.tutorial``.
"""
from .tutorial import *  # noqa: F403
from .tutorial import __all__  # noqa: F401
