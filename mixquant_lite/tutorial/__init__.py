"""Helpers for the tutorial notebooks: sound comparisons (:mod:`.stats`) and the alternative
reading of the MixQuant rule (:mod:`.readings`). Import the submodules directly."""
