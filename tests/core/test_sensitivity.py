"""Sensitivity measures: Hutchinson vs the exact trace, known answers on toy models, the budget
solver against brute force on every measure's table, bad inputs (the paired test:
tests/core/test_stats.py)."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixquant_lite import fake_quantize, plan_for_budget, qe_table
from mixquant_lite.sensitivity import (
    MEASURES,
    fisher,
    hessian,
    hessian_trace,
    output,
    sensitivity_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class DeadBranch(nn.Module):
    """``live(x) + 0 * dead(x)``: the ``dead`` layer cannot affect the output or the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.live = nn.Linear(4, 3)
        self.dead = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.live(x) + 0.0 * self.dead(x)


def _data(n=40, d=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).eval()


def _exact_block_traces(model, x, y):
    """Exact per-layer Hessian-block traces of the mean cross-entropy (autograd.functional)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    params = dict(model.named_parameters())
    out = []
    for name in names:
        w0 = params[f"{name}.weight"].detach()

        def loss(w, name=name):
            sd = {k: v.detach() for k, v in params.items()}
            sd[f"{name}.weight"] = w
            return F.cross_entropy(torch.func.functional_call(model, sd, (x,)), y)

        h = torch.autograd.functional.hessian(loss, w0)
        out.append(float(h.reshape(w0.numel(), w0.numel()).diagonal().sum()))
    return np.array(out)


def test_hutchinson_matches_exact_trace():
    model = _mlp()
    x, y = _data()
    exact = _exact_block_traces(model, x, y)
    tr = hessian_trace(model, x, labels=y, n_probes=400, batch_size=20, seed=1)
    assert tr.layers == ("0", "2") and tr.estimates.shape == (400, 2)
    assert np.all(np.abs(tr.trace - exact) <= 4 * tr.std_error)
    assert np.allclose(tr.trace, exact, rtol=0.1)
    assert np.allclose(tr.running()[-1], tr.trace)
    assert np.all(tr.rel_std_error < 0.06)
    joint = hessian_trace(model, x, labels=y, n_probes=400, seed=1, per_layer=False)
    assert np.all(np.abs(joint.trace - exact) <= 4 * joint.std_error)
    assert np.all(joint.std_error >= tr.std_error)  # cross-layer terms only add variance


def test_hessian_trace_softmax_regression_closed_form():
    # For logits W x, tr(H) = mean_n sum_k p_k (1 - p_k) ||x_n||^2.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4)).eval()
    x, y = _data(n=30, d=6, k=4)
    p = torch.softmax(model(x), 1).detach()
    closed = float(((p * (1 - p)).sum(1) * (x**2).sum(1)).mean())
    tr = hessian_trace(model, x, labels=y, n_probes=150, seed=0)
    assert tr.trace[0] == pytest.approx(closed, rel=0.1)
    table = hessian(model, x, (2, 4), labels=y, trace=tr)
    q = qe_table(model, (2, 4))
    assert np.allclose(table.values, 0.5 * tr.trace[0] * q.values)


def test_dead_layer_costs_nothing_to_data_aware_measures():
    model = DeadBranch().eval()
    x, y = _data()
    q = qe_table(model, (2, 3, 4))
    assert (q.values[1] > 0).all()  # QE cannot tell that `dead` is irrelevant
    for t in (hessian(model, x, (2, 3, 4), labels=y, n_probes=4),
              fisher(model, x, (2, 3, 4), labels=y),
              output(model, x, (2, 3, 4))):
        assert t.layers == q.layers and t.bits == q.bits and t.numel == q.numel
        assert np.all(t.values[1] == 0), t.measure
        assert np.all(t.values[0] > 0), t.measure
        plan = plan_for_budget(t, avg_bits=3.0)
        assert plan.bits["dead"] == 2 and plan.bits["live"] == 4


def test_fisher_softmax_regression_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3)).eval()
    x, y = _data(n=25, d=5, k=3)
    p = torch.softmax(model(x), 1).detach()
    g = (p - F.one_hot(y, 3)).unsqueeze(2) * x.unsqueeze(1)  # per-image dL/dW, (n, 3, 5)
    fdiag = (g.double() ** 2).mean(0)
    w = model[0].weight.detach()
    want = [0.5 * float((fdiag * (w - fake_quantize(w, b)).double() ** 2).sum()) for b in (2, 3, 8)]
    got = fisher(model, x, (2, 3, 8), labels=y, batch_size=7)
    assert np.allclose(got.values[0], want, rtol=1e-5)


def test_output_kl_known_answer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with torch.no_grad():  # weights on the 2-bit grid {-1, 0, 1, 2}: exact at 2 bits (and 4)
        model[0].weight.copy_(torch.tensor([[-1.0, 0, 1, 2], [2, 1, 0, -1], [0, 0, 1, 1]]))
    x, _ = _data()
    t = output(model, x, (2, 3, 4))
    assert t.values[0, 0] == 0 and t.values[0, 2] == 0 and t.values[0, 1] > 0
    w = model[0].weight.detach()
    with torch.no_grad():
        logq = F.log_softmax(F.linear(x, fake_quantize(w, 3), model[0].bias).double(), 1)
        logp = F.log_softmax(model(x).double(), 1)
    want = float((logp.exp() * (logp - logq)).sum(1).mean())
    assert t.values[0, 1] == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("measure", MEASURES)
def test_plan_for_budget_matches_brute_force(measure):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(),
                          nn.Linear(5, 3)).eval()
    x, y = _data()
    kw = {"n_probes": 8} if measure == "hessian" else {}
    t = sensitivity_table(model, measure, x, (2, 3, 4), labels=None if measure == "qe" else y,
                          **kw) if measure != "qe" else sensitivity_table(model, "qe", None,
                                                                          (2, 3, 4))
    cost = t.cost_matrix()
    numel = t.numel_array()
    for avg in (2.3, 2.8, 3.4):
        best = min(
            sum(cost[i, c] for i, c in enumerate(cols))
            for cols in itertools.product(range(3), repeat=3)
            if sum(numel[i] * t.bits[c] for i, c in enumerate(cols)) <= avg * numel.sum()
        )
        plan = plan_for_budget(t, avg_bits=avg)
        got = sum(cost[i, t.bits.index(plan.bits[n])] for i, n in enumerate(t.layers))
        assert got == pytest.approx(best, rel=1e-9, abs=1e-15)


def test_bad_inputs_raise_clear_errors():
    model = _mlp()
    x, y = _data()
    with pytest.raises(ValueError, match="measure must be one of"):
        sensitivity_table(model, "hawq", x)
    with pytest.raises(ValueError, match="needs calibration images"):
        sensitivity_table(model, "fisher")
    with pytest.raises(ValueError, match="takes options"):
        sensitivity_table(model, "output", x, n_probes=3)
    with pytest.raises(ValueError, match="n_probes must be an int >= 2"):
        hessian_trace(model, x, n_probes=1)
    with pytest.raises(ValueError, match="labels must have shape"):
        fisher(model, x, labels=y[:5])
    with pytest.raises(ValueError, match="NaN or inf"):
        output(model, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="calib must be a float tensor"):
        output(model, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="bits"):
        output(model, x, bits=(0, 2))
    with pytest.raises(ValueError, match="no Conv2d/Linear"):
        fisher(nn.Sequential(nn.ReLU()), x)
