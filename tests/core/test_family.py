"""Families of questions: Holm / Benjamini-Hochberg adjustment, TOST for paired accuracies and
the Family helper whose verdicts come from the adjusted p-values (hand-computed small cases)."""
import numpy as np
import pytest

from mixquant_lite.stats import Family, Question, adjust_pvalues, paired_compare, tost_paired

P = [0.01, 0.04, 0.03, 0.005]


def test_holm_matches_the_hand_computation():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    assert np.allclose(adjust_pvalues(P, "holm"), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(adjust_pvalues([0.5, 0.9], "holm"), [1.0, 1.0])  # capped at 1
    assert np.allclose(adjust_pvalues([0.2], "holm"), [0.2])  # a family of one: unchanged


def test_bh_matches_the_hand_computation():
    # sorted ranks 1..4: 0.02, 0.02, 0.04, 0.04 (step-up minimum from the top)
    assert np.allclose(adjust_pvalues(P, "bh"), [0.02, 0.04, 0.04, 0.02])


@pytest.mark.parametrize("bad, match", [([], "non-empty"), ([0.1, 1.5], r"\[0, 1\]"),
                                        ([[0.1]], "1-D")])
def test_adjust_rejects_bad_p_values(bad, match):
    with pytest.raises(ValueError, match=match):
        adjust_pvalues(bad)


def test_adjust_rejects_unknown_method():
    with pytest.raises(ValueError, match="method must be one of"):
        adjust_pvalues(P, "bonferroni-ish")


def test_tost_equivalent_identical_models_and_not_a_three_point_gap():
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.97
    p_same, lo, hi = tost_paired(a, a, margin=1.0)
    assert p_same < 0.001 and lo <= 0 <= hi and hi - lo < 0.6  # Newcombe: +-0.25 at 0 discordant
    b = a.copy()
    b[np.flatnonzero(a)[:30]] = False  # B loses 30 images: 3 points worse
    p_gap, lo, hi = tost_paired(a, b, margin=1.0)
    assert p_gap == 1.0 and lo > 1.0


def test_tost_p_value_agrees_with_its_interval_and_shrinks_with_the_margin():
    rng = np.random.default_rng(1)
    a = rng.random(1000) < 0.95
    b = a.copy()
    flip = rng.choice(1000, 40, replace=False)
    b[flip] = ~b[flip]
    ps = [tost_paired(a, b, margin=m)[0] for m in (0.5, 1.0, 2.0, 4.0)]
    assert ps == sorted(ps, reverse=True)
    for m in (0.5, 1.0, 2.0, 4.0):
        p, lo, hi = tost_paired(a, b, margin=m)
        assert (p < 0.05) == (-m < lo and hi < m)  # TOST at 5% == 90% interval inside


@pytest.mark.parametrize("margin", [0, -1, 100, True, "1"])
def test_tost_rejects_bad_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        tost_paired([1, 0, 1], [1, 1, 0], margin=margin)


def test_family_verdicts_come_from_adjusted_p_values():
    fam = Family("nb03")
    fam.add(Question("uniform W4 vs MixQuant", 0.02, effect=0.5, better="uniform W4",
                     worse="MixQuant"))
    fam.add(Question("budget vs MixQuant", 0.03, effect=-0.4, better="budget", worse="MixQuant"))
    fam.add(Question("budget ~ uniform", 0.04, kind="equivalence", margin=1.0))
    v = fam.verdicts().set_index("question")
    # each raw p < 0.05, but Holm: 0.06, 0.06, 0.06 -> nothing survives
    assert np.allclose(v.p_adjusted, [0.06, 0.06, 0.06])
    assert v.verdict.tolist() == ["no difference detected"] * 2 + ["equivalence not shown"]
    fam2 = Family("one", questions=[Question("x", 0.001, effect=-2.0, better="A", worse="B"),
                                    Question("y", 0.001, kind="equivalence", margin=1.0)])
    assert fam2.verdicts().verdict.tolist() == ["B better", "equivalent within +-1 points"]
    fam3 = Family("assoc", questions=[Question("r", 0.001, effect=-0.5, kind="association"),
                                      Question("s", 0.2, effect=0.9, kind="association")])
    assert fam3.verdicts().verdict.tolist() == ["negative association", "no association detected"]


def test_family_rejects_duplicates_bad_kinds_and_empty():
    fam = Family("f")
    with pytest.raises(ValueError, match="no questions"):
        fam.verdicts()
    fam.add(Question("q", 0.5))
    with pytest.raises(ValueError, match="already in family"):
        fam.add(Question("q", 0.1))
    with pytest.raises(ValueError, match="kind must be"):
        fam.add(Question("r", 0.1, kind="superiority"))


def test_family_with_paired_compare_end_to_end():
    rng = np.random.default_rng(2)
    a = rng.random(1000) < 0.9
    b = a.copy()
    b[np.flatnonzero(a)[:60]] = False
    t = paired_compare(a, b, labels=("A", "B"))
    fam = Family("f", method="bh")
    fam.add(Question("A vs B", t.p_value, effect=t.diff, better="A", worse="B"))
    assert fam.verdicts().verdict.iloc[0] == "A better"


def test_family_report_and_record(tmp_path):
    fam = Family("nb", questions=[Question("a vs b", 0.01, effect=1.0, better="a", worse="b")])
    assert fam.report() == "a vs b: a better (p = 0.01, holm-adjusted p = 0.01)"
    path = tmp_path / "findings.json"
    Family("other", questions=[Question("x", 0.5)]).record(path)
    fam.record(path)
    import json
    found = json.loads(path.read_text())
    assert set(found) == {"nb", "other"} and found["nb"][0]["verdict"] == "a better"
