"""Old module path of :mod:`mixquant_lite.tutorial.plotting` (kept so that
``from mixquant_lite.plotting import ...`` keeps working)."""
from .tutorial.plotting import *  # noqa: F403
from .tutorial.plotting import QE_LABEL, __all__  # noqa: F401
