"""mixquant-lite: MixQuant mixed-precision post-training quantization, small and readable."""
from .evaluate import evaluate

__version__ = "0.1.0"
__all__ = ["evaluate"]
