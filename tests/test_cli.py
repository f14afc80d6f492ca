"""``mixquant-lite search`` / ``sweep``: models from files, names and the shipped checkpoint;
tables, summaries, JSON plans; clear errors (exit 2) instead of silent random weights."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mixquant_lite.zoo.models as models
from mixquant_lite import cli
from mixquant_lite.cli import main
from mixquant_lite.plan import BitPlan

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "data" / "MANIFEST.json").is_file()

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A fake checkpoint: a bare state_dict of a random ResNet-20."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "r20.pt"
    torch.save(models.resnet20().state_dict(), path)
    return path


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_search_from_a_checkpoint(capsys, ckpt, tmp_path):
    plan_path = tmp_path / "plan.json"
    rc, out, err = run(capsys, "search", "--model", ckpt, "--arch", "resnet20", "--qem", 300,
                       "--json", plan_path)
    assert rc == 0, err
    assert "QE@2" in out and "QE@8" in out and "weights" in out and "bits" in out
    assert "layer3.2.conv2" in out and "fc" in out
    assert "average bits" in out and "in f32" in out and "x smaller" in out
    assert "QEM 300" in out
    plan = BitPlan.from_json(plan_path)
    assert len(plan.bits) == 22 and plan.meta["qem"] == 300
    assert f"average bits {plan.avg_bits:.3f}" in out


def test_checkpoint_with_arch_inside(capsys, ckpt, tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save({"arch": "resnet20", "state_dict": torch.load(ckpt, weights_only=True)}, path)
    rc, out, err = run(capsys, "search", "--model", path, "--qem", 10)
    assert rc == 0, err


def test_bare_state_dict_needs_arch(capsys, ckpt):
    rc, out, err = run(capsys, "search", "--model", ckpt)
    assert rc == 2 and "--arch" in err


def test_checkpoint_errors(capsys, ckpt, tmp_path):
    rc, _, err = run(capsys, "search", "--model", tmp_path / "missing.pt", "--arch", "resnet20")
    assert rc == 2 and "does not exist" in err
    rc, _, err = run(capsys, "search", "--model", ckpt, "--arch", "resnet18")
    assert rc == 2 and "does not fit --arch resnet18" in err
    pickled = tmp_path / "model.pt"
    torch.save(models.resnet20(), pickled)  # a whole pickled module: refused by weights_only
    rc, _, err = run(capsys, "search", "--model", pickled, "--arch", "resnet20")
    assert rc == 2 and "weights_only=True" in err


def test_budget_and_options(capsys, ckpt, tmp_path):
    plan_path = tmp_path / "b.json"
    rc, out, err = run(capsys, "search", "--model", ckpt, "--arch", "resnet20",
                       "--budget-avg-bits", 4.5, "--per-channel", "--bits", "2-6",
                       "--first-last-bits", 6, "--json", plan_path)
    assert rc == 0, err
    assert "QE@6" in out and "QE@7" not in out and "per-channel" in out
    assert "exact" in out and "MixQuant within the same budget" in out
    plan = BitPlan.from_json(plan_path)
    assert plan.avg_bits <= 4.5 and plan.per_channel
    assert plan.bits["conv1"] == 6 and plan.bits["fc"] == 6


def test_search_errors(capsys, ckpt):
    rc, _, err = run(capsys, "search", "--model", ckpt, "--arch", "resnet20",
                     "--budget-avg-bits", 1.0)
    assert rc == 2 and "smallest achievable" in err
    rc, _, err = run(capsys, "search", "--model", ckpt, "--arch", "resnet20", "--fix", "nope=8")
    assert rc == 2 and "'nope'" in err
    for bad in (["--qem", "0"], ["--qem", "nan"], ["--bits", "9-2"], ["--bits", "2,2"],
                ["--qem", "10", "--budget-avg-bits", "4"]):
        with pytest.raises(SystemExit) as e:
            main(["search", "--model", str(ckpt), "--arch", "resnet20", *bad])
        assert e.value.code == 2


def test_sweep(capsys, ckpt):
    rc, out, err = run(capsys, "sweep", "--model", ckpt, "--arch", "resnet20",
                       "--qem", 1, 10, 100, 1000, 10000)
    assert rc == 0, err
    rows = [line for line in out.splitlines() if line.split()[:1] in
            (["1"], ["10"], ["100"], ["1000"], ["10000"])]
    assert len(rows) == 5
    assert rows[0].split()[1] == "8.000"  # QEM 1 keeps the 8-bit baseline
    assert "nan" not in out.lower()


def test_pretrained_unavailable_is_an_error(capsys, monkeypatch):
    def unavailable(name, pretrained=True):
        if pretrained:
            raise models.PretrainedUnavailableError(f"pretrained weights for {name}: no network")
        raise AssertionError("random weights must not be used silently")

    monkeypatch.setattr(models, "torchvision_resnet", unavailable)
    rc, out, err = run(capsys, "search", "--model", "resnet18")
    assert rc == 2 and "--random-init" in err and "no network" in err
    assert "QE@" not in out


def test_random_init_is_explicit(capsys, monkeypatch):
    import torchvision

    monkeypatch.setattr(models, "torchvision_resnet",
                        lambda name, pretrained=True: torchvision.models.resnet18(weights=None))
    rc, out, err = run(capsys, "search", "--model", "resnet18", "--random-init", "--qem", 100)
    assert rc == 0, err
    assert "RANDOM (untrained) weights" in out and "layer4.1.conv2" in out
    rc, _, err = run(capsys, "search", "--model", "resnet20-mnist5k", "--random-init")
    assert rc == 2 and "torchvision model names only" in err


def test_unknown_model(capsys):
    rc, _, err = run(capsys, "search", "--model", "no-such-model")
    assert rc == 2 and "unknown model 'no-such-model'" in err


@pytest.mark.skipif(not SHIPPED, reason="data/MANIFEST.json (shipped checkpoint) not present")
def test_shipped_checkpoint(capsys):
    rc, out, err = run(capsys, "search", "--model", "resnet20-mnist5k", "--qem", 300)
    assert rc == 0, err
    assert "shipped checkpoint resnet20-mnist5k" in out and "average bits" in out


def test_commands_are_a_registry(capsys, monkeypatch):
    def add(p):
        p.add_argument("--n", type=int, default=1)

    def go(args):
        print(f"hello {args.n}")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "hello", (add, go, "say hello"))
    rc, out, _ = run(capsys, "hello", "--n", 3)
    assert rc == 0 and out.strip() == "hello 3"


@pytest.mark.slow  # a fresh interpreter imports torch: a few seconds
def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "mixquant_lite.cli", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "search" in r.stdout and "sweep" in r.stdout
