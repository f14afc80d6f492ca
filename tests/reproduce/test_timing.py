"""estimate_brecq_time: a measured warm-up extrapolated to a job (tiny settings on CPU)."""
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mixquant_lite.reproduce import QUICK, ReproduceConfig, brecq_schedule, workload
from mixquant_lite.reproduce.timing import (
    GPTQ_FORWARDS,
    BrecqTimeEstimate,
    estimate_brecq_time,
    estimate_reproduce_time,
    gptq_eval_equivalents,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    return model, torch.randn(32, 1, 8, 8)


def test_estimate_adds_up(tiny):
    model, x = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    est = estimate_brecq_time(model, x, n_runs=3, iters=1000, n_calib=32, batch_size=16,
                              warmup_steps=5, limit_s=1e9)
    assert isinstance(est, BrecqTimeEstimate)
    assert est.units == ("0", "2", "5") and est.device == "cpu" and est.iters == 1000
    assert len(est.steps_per_s) == len(est.unit_overhead_s) == 3
    assert math.isinf(est.steps_per_s[0])  # the stem stays at nearest: no steps
    assert all(0 < v < math.inf for v in est.steps_per_s[1:])
    loops = sum(1000 / v for v in est.steps_per_s[1:])
    assert est.brecq_run_s >= loops + sum(est.unit_overhead_s) - 1e-9  # + set-up (folding)
    assert est.total_s == pytest.approx(3 * est.brecq_run_s)
    assert est.fits is True and "Fits in" in str(est)
    # more steps cost proportionally more loop time, nothing else changes
    again = estimate_brecq_time(model, x, n_runs=1, iters=0, n_calib=32, batch_size=16,
                                warmup_steps=5, limit_s=1e-3)
    assert again.brecq_run_s < est.brecq_run_s and again.fits is False
    assert "Does NOT fit" in str(again)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_eval_time_from_a_loader(tiny):
    model, x = tiny
    loader = DataLoader(TensorDataset(torch.randn(80, 1, 8, 8), torch.zeros(80)), batch_size=8)
    est = estimate_brecq_time(model, x, n_runs=0, iters=200, n_calib=32, batch_size=16,
                              warmup_steps=5, eval_loader=loader, n_evals=4, eval_batches=2)
    assert est.eval_s > 0 and est.n_evals == 4
    assert est.total_s == pytest.approx(4 * est.eval_s)
    assert "4 evaluations" in str(est)


@pytest.mark.parametrize("kw, match", [
    (dict(n_evals=2), "eval_loader"),
    (dict(warmup_steps=2), "warmup_steps"),
    (dict(n_runs=-1), "n_runs"),
    (dict(iters=1.5), "iters"),
    (dict(limit_s=0), "limit_s"),
    (dict(bits=0), "bits"),
])
def test_bad_arguments_are_named(tiny, kw, match):
    model, x = tiny
    with pytest.raises(ValueError, match=match):
        estimate_brecq_time(model, x, n_calib=32, **kw)
    with pytest.raises(TypeError, match="nn.Module"):
        estimate_brecq_time("resnet", x)


def test_workload_counts_the_drivers_run_list():
    cfg = ReproduceConfig.preset("quick", act_bits=(None,))
    quick = workload(cfg)
    # W4, W3, W2: BRECQ + MixQuant + budget; 2.5: MixQuant + budget
    assert quick["brecq_runs"] == 3 * 3 + 2
    # FP32 + 6 uniform + 14 QEMs x (MixQuant, budget) + BRECQ-section vanilla + BRECQ models
    # + the GPTQ models (W3: uniform, MixQuant, budget)
    assert quick["gptq_runs"] == 3
    assert quick["evals"] == 1 + 6 + 28 + (3 * 3 + 2) + 11 + 3
    assert (quick["iters"], quick["n_calib"]) == (200, 256)
    full = workload(ReproduceConfig.preset("full", act_bits=(None, 8)))
    assert full["brecq_runs"] == 2 * 11 and full["iters"] == 20000 and full["gptq_runs"] == 9
    assert gptq_eval_equivalents(3, 256, 1000) == math.ceil(3 * GPTQ_FORWARDS * 256 / 1000)
    assert gptq_eval_equivalents(0, 256, 1000) == 0
    assert quick["brecq_runs"] == sum(len(p.runs) for p in brecq_schedule(cfg))
    assert workload(QUICK)["brecq_runs"] == 3 * 4 + 2  # uniform at A32 and A8


@pytest.mark.slow  # loads MNIST-5k and runs two short BRECQ passes on ResNet-20
def test_estimate_reproduce_time_mnist():
    cfg = ReproduceConfig.preset("quick", model="resnet20", act_bits=(None,), n_calib=32,
                                 iters=50, pretrained=False, device="cpu", batch_size=100)
    est = estimate_reproduce_time(cfg, warmup_steps=5, eval_batches=1)
    work = workload(cfg)
    gptq_evals = gptq_eval_equivalents(work["gptq_runs"], 32, 1000)  # MNIST-5k test: 1,000
    assert est.n_runs == work["brecq_runs"] and est.n_evals == work["evals"] + gptq_evals
    assert est.iters == 50 and len(est.units) == 11 and est.eval_s > 0
    assert est.total_s == pytest.approx(est.n_runs * est.brecq_run_s + est.n_evals * est.eval_s)
