"""Paired tests: two models scored on the *same* test images, compared image by image.

A difference of one image in 1,000 (0.1 points) is far inside the noise of a 1,000-image test set,
so two accuracies alone never decide which model is better. :func:`paired_compare` gives the
accuracy of A and B, their difference with a confidence interval (Newcombe's hybrid score interval
for paired proportions, or a paired bootstrap over images), the exact McNemar p-value and a
verdict (``"<A> better"``, ``"<B> better"`` or :data:`TIE`); :func:`paired_table` does it for many
pairs. ``mixquant-lite reproduce`` uses them for the "Paired comparisons" section of its results,
and :mod:`mixquant_lite.tutorial.stats` re-exports them for the notebooks.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .validate import check_alpha, check_int

__all__ = [
    "TIE",
    "as_correct",
    "PairedComparison",
    "mcnemar_exact",
    "paired_compare",
    "paired_table",
    "wilson_interval",
    "newcombe_interval",
]

TIE = "no difference detected"


# ---------------------------------------------------------------------------- inputs


def as_correct(x: Any, name: str = "correct") -> np.ndarray:
    """Per-image correctness as a 1-D bool array.

    Accepts a bool / 0-1 integer array or list, a torch tensor, or a string of ``"0"``/``"1"``
    characters (the ``per_image_correct`` entries of a ``reproduce`` JSON file).

    Raises:
        TypeError / ValueError naming ``name`` for anything else (other characters, values other
        than 0/1, more than one dimension, an empty sequence).
    """
    if isinstance(x, str):
        bad = set(x) - {"0", "1"}
        if bad:
            raise ValueError(f"{name} as a string must hold only '0' and '1', found {sorted(bad)}")
        arr = np.frombuffer(x.encode("ascii"), dtype=np.uint8) == ord("1")
    else:
        if hasattr(x, "detach"):  # torch tensor
            x = x.detach().cpu().numpy()
        try:
            arr = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be a bool array, tensor or '0'/'1' string") from e
        if arr.dtype == object:
            raise TypeError(f"{name} must be a bool array, tensor or '0'/'1' string, got {x!r:.60}")
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one entry per image), got shape {arr.shape}")
        if arr.dtype != bool:
            if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{name} must hold only 0/1 or True/False values")
            arr = arr.astype(bool)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one image")
    return arr


# ---------------------------------------------------------------------------- paired tests


@dataclass(frozen=True)
class PairedComparison:
    """Two models scored on the same images (accuracies and differences in percentage points).

    Attributes:
        label_a, label_b: the names of A and B.
        n: number of images.
        acc_a, acc_b: top-1 accuracy of A and of B, %.
        diff: ``acc_a - acc_b``, points.
        ci_low, ci_high: the ``1 - alpha`` confidence interval of ``diff``, points.
        ci_method: ``"newcombe"`` (hybrid score interval for paired proportions, Newcombe 1998,
            method 10) or ``"bootstrap"`` (percentile, resampling images).
        only_a: images A gets right and B wrong; only_b: the reverse (the discordant pairs).
        p_value: exact two-sided McNemar p-value (binomial test of ``only_a`` out of
            ``only_a + only_b`` at 1/2; 1.0 when there are no discordant pairs).
        alpha: the level of the test and of the interval.
        verdict: ``"<A> better"`` / ``"<B> better"`` when ``p_value < alpha`` (the sign of
            ``diff``), else :data:`TIE`.
    """

    label_a: str
    label_b: str
    n: int
    acc_a: float
    acc_b: float
    diff: float
    ci_low: float
    ci_high: float
    ci_method: str
    only_a: int
    only_b: int
    p_value: float
    alpha: float
    verdict: str

    @property
    def is_tie(self) -> bool:
        return self.verdict == TIE

    def __str__(self) -> str:
        ci = f"{100 * (1 - self.alpha):.0f}% CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}]"
        return (f"{self.label_a} {self.acc_a:.1f}% vs {self.label_b} {self.acc_b:.1f}% "
                f"on {self.n} images: diff {self.diff:+.2f} points, {ci}; "
                f"discordant {self.only_a}/{self.only_b}, exact McNemar p = {self.p_value:.3g}"
                f" -> {self.verdict}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for ``k`` successes out of ``n`` at normal quantile ``z``."""
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(a: int, b: int, c: int, d: int, alpha: float) -> tuple[float, float]:
    """Newcombe's (1998) method 10 for ``p1 - p2`` with paired data, as proportions.

    ``a``: both right, ``b``: only the first right, ``c``: only the second, ``d``: both wrong.
    """
    n = a + b + c + d
    z = stats.norm.ppf(1 - alpha / 2)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(den) if den > 0 else 0.0
    diff = p1 - p2
    lo = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, diff - lo), min(1.0, diff + hi)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (1.0 if there are none)."""
    m = only_a + only_b
    if m == 0:
        return 1.0
    return float(stats.binomtest(only_a, m, 0.5, alternative="two-sided").pvalue)


def paired_compare(
    correct_a: Any,
    correct_b: Any,
    *,
    labels: tuple[str, str] = ("A", "B"),
    alpha: float = 0.05,
    ci: str = "newcombe",
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two models scored on the same images, image by image.

    Args:
        correct_a, correct_b: per-image correctness of A and B, in the same image order (bool
            arrays, 0/1 tensors or ``"0101"`` strings; see :func:`as_correct`), same length.
        labels: names of A and B, used in the verdict.
        alpha: level of the exact McNemar test and of the ``1 - alpha`` interval.
        ci: ``"newcombe"`` (default; a closed-form score interval, no randomness) or
            ``"bootstrap"`` (percentile interval from ``n_boot`` paired resamples of the images,
            drawn with ``numpy.random.default_rng(seed)``; resampling images is the same as
            drawing the counts of the four outcome kinds from a multinomial, which is done).

    Returns:
        A :class:`PairedComparison`. The verdict follows the exact McNemar test: a difference
        is named only when ``p < alpha``; otherwise :data:`TIE`, "no difference detected" (not
        "equal": :func:`tost_paired` tests equivalence).
    """
    a = as_correct(correct_a, "correct_a")
    b = as_correct(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must score the same images: lengths "
                         f"{a.size} and {b.size}")
    if not (isinstance(labels, Sequence) and len(labels) == 2):
        raise ValueError(f"labels must be two names (A, B), got {labels!r}")
    alpha = check_alpha(alpha)
    n = int(a.size)
    both = int((a & b).sum())
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    neither = n - both - only_a - only_b
    diff = (only_a - only_b) / n
    if ci == "newcombe":
        lo, hi = newcombe_interval(both, only_a, only_b, neither, alpha)
    elif ci == "bootstrap":
        n_boot = check_int("n_boot", n_boot, 100)
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, [only_a / n, only_b / n, (both + neither) / n], size=n_boot)
        boot = (draws[:, 0] - draws[:, 1]) / n
        lo, hi = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    else:
        raise ValueError(f"ci must be 'newcombe' or 'bootstrap', got {ci!r}")
    p = mcnemar_exact(only_a, only_b)
    la, lb = str(labels[0]), str(labels[1])
    verdict = TIE if p >= alpha else (f"{la} better" if diff > 0 else f"{lb} better")
    return PairedComparison(
        label_a=la, label_b=lb, n=n, acc_a=100.0 * (both + only_a) / n,
        acc_b=100.0 * (both + only_b) / n, diff=100.0 * diff, ci_low=100.0 * lo,
        ci_high=100.0 * hi, ci_method=ci, only_a=only_a, only_b=only_b, p_value=p,
        alpha=alpha, verdict=verdict,
    )


def paired_table(
    pairs: Iterable[tuple[str, Any, str, Any]],
    *,
    alpha: float = 0.05,
    ci: str = "newcombe",
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`paired_compare` for many pairs ``(label_a, correct_a, label_b, correct_b)``.

    Returns one row per pair with the fields of :class:`PairedComparison` (points, p-value,
    verdict), in the given order.
    """
    rows = [paired_compare(ca, cb, labels=(la, lb), alpha=alpha, ci=ci, n_boot=n_boot,
                           seed=seed).to_dict() for la, ca, lb, cb in pairs]
    return pd.DataFrame(rows, columns=list(PairedComparison.__dataclass_fields__))


# ---------------------------------------------------------------------------- families of tests

__all__ += ["adjust_pvalues", "tost_paired", "Question", "Family"]

ADJUST_METHODS = ("holm", "bh")
KINDS = ("difference", "equivalence", "association")


def adjust_pvalues(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values of one family, in the given order.

    ``"holm"``: Holm's step-down (family-wise error); ``"bh"``: Benjamini-Hochberg (false
    discovery rate; ``scipy.stats.false_discovery_control``). Reject a question when its
    adjusted p-value is below alpha. Raises ``ValueError`` for p-values outside [0, 1], an
    empty family or an unknown ``method``.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p_values must be a non-empty 1-D sequence in [0, 1], got {p_values!r}")
    if method == "bh":
        return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=float)
    if method != "holm":
        raise ValueError(f"method must be one of {ADJUST_METHODS}, got {method!r}")
    order = np.argsort(p, kind="stable")
    steps = (p.size - np.arange(p.size)) * p[order]
    adj = np.empty_like(p)
    adj[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adj


def tost_paired(correct_a: Any, correct_b: Any, margin: float = 1.0) -> tuple[float, float, float]:
    """Equivalence of two models on the same images: two one-sided tests (TOST).

    H0: ``|acc_a - acc_b| >= margin`` (points) against H1: the difference lies inside
    ``(-margin, margin)``. Returns ``(p, lo, hi)``: the TOST p-value, the smallest ``alpha`` at
    which the ``1 - 2 alpha`` Newcombe interval of the difference (points) lies inside the margin,
    and that interval at ``alpha = 0.05`` (a 90% interval). Equivalence is shown at level alpha
    when ``p < alpha``. ``margin`` must be in (0, 100).
    """
    a = as_correct(correct_a, "correct_a")
    b = as_correct(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must score the same images: lengths "
                         f"{a.size} and {b.size}")
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 < margin < 100:
        raise ValueError(f"margin must be a number of points in (0, 100), got {margin!r}")
    cells = (int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum()))
    m = margin / 100

    def inside(alpha: float) -> bool:
        lo, hi = newcombe_interval(*cells, 2 * alpha)
        return -m < lo and hi < m

    lo90, hi90 = newcombe_interval(*cells, 0.10)
    if not inside(0.4999):
        return 1.0, 100 * lo90, 100 * hi90
    small, big = 1e-12, 0.4999  # inside(big) holds; bisect for the smallest alpha that fits
    if inside(small):
        return small, 100 * lo90, 100 * hi90
    for _ in range(60):
        mid = math.sqrt(small * big)
        small, big = (small, mid) if inside(mid) else (mid, big)
    return big, 100 * lo90, 100 * hi90


@dataclass(frozen=True)
class Question:
    """One primary question of a family: a name, its raw p-value and how to word the answer.

    ``kind``: ``"difference"`` (H0: no difference; ``effect`` > 0 means ``better`` wins),
    ``"equivalence"`` (TOST; H0: a difference at least the margin) or ``"association"`` (H0: no
    correlation; ``effect`` is the correlation, its sign names the direction).
    """

    name: str
    p_value: float
    effect: float = 0.0
    kind: str = "difference"
    better: str = "A"
    worse: str = "B"
    margin: float | None = None


@dataclass
class Family:
    """The primary questions of one notebook, tested together with one multiplicity adjustment.

    ``add`` a :class:`Question` per question (decided before the numbers are seen), then
    ``verdicts()``: one row per question with the raw and adjusted p-value and the verdict
    from the *adjusted* p-value: ``"<better> better"``, ``"no difference detected"``,
    ``"equivalent within +-<margin> points"``, ``"equivalence not shown"``,
    ``"positive association"`` / ``"negative association"`` or ``"no association detected"``.
    """

    name: str
    alpha: float = 0.05
    method: str = "holm"
    questions: list[Question] | None = None

    def add(self, question: Question) -> Question:
        qs = self.questions if self.questions is not None else []
        if any(q.name == question.name for q in qs):
            raise ValueError(f"question {question.name!r} is already in family {self.name!r}")
        if question.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {question.kind!r}")
        self.questions = [*qs, question]
        return question

    def verdicts(self) -> pd.DataFrame:
        qs = self.questions or []
        if not qs:
            raise ValueError(f"family {self.name!r} has no questions")
        alpha = check_alpha(self.alpha)
        adj = adjust_pvalues([q.p_value for q in qs], self.method)
        rows = []
        for q, pa in zip(qs, adj, strict=True):
            if q.kind == "association":
                v = (("positive" if q.effect > 0 else "negative") + " association" if pa < alpha
                     else "no association detected")
            elif q.kind == "equivalence":
                v = (f"equivalent within +-{q.margin:g} points" if pa < alpha
                     else "equivalence not shown")
            elif pa < alpha:
                v = f"{q.better} better" if q.effect > 0 else f"{q.worse} better"
            else:
                v = "no difference detected"
            rows.append({"family": self.name, "question": q.name, "kind": q.kind,
                         "effect": q.effect, "p": q.p_value, "p_adjusted": float(pa),
                         "method": self.method, "alpha": alpha, "verdict": v})
        return pd.DataFrame(rows)

    def report(self) -> str:
        """One line per question, ``"<question>: <verdict> (p = .., <method>-adjusted p = ..)"``."""
        return "\n".join(f"{r.question}: {r.verdict} (p = {r.p:.2g}, {r.method}-adjusted p = "
                         f"{r.p_adjusted:.2g})" for r in self.verdicts().itertuples())

    def record(self, path: Any) -> None:
        """Write this family's verdicts into the JSON findings file at ``path`` under the key
        ``name`` (other families in the file are kept)."""
        import json
        from pathlib import Path

        path = Path(path)
        found = json.loads(path.read_text()) if path.is_file() else {}
        found[self.name] = self.verdicts().to_dict(orient="records")
        path.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
