"""The results table (``mixquant-lite reproduce``): offline default with tiny settings, the
Colab/ImageNet path on small local fixtures in the real folder layouts, and the CLI glue."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from mixquant_lite import cli
from mixquant_lite.reproduce import (
    COLUMNS,
    QUICK,
    ReproduceConfig,
    paired_comparisons,
    render_markdown,
    reproduce,
)
from mixquant_lite.reproduce.table import matched_label
from mixquant_lite.zoo.data import IMAGENETTE_WNIDS
from mixquant_lite.zoo.models import data_dir, resnet20

TINY = dict(iters=2, n_calib=32, act_bits=(None,), vanilla_bits=(8, 2), brecq_bits=(2,),
            brecq_between=(), qem_grid=(4096.0,), progress=False, verbose=False, device="cpu",
            workers=0, gptq_bits=())


def _run(model: str = "resnet20-mnist5k", dataset: str = "mnist5k", **kw) -> pd.DataFrame:
    """``reproduce`` of the FULL preset with ``kw`` replaced (TINY settings in the tests)."""
    return reproduce(ReproduceConfig.preset("full", model=model, dataset=dataset, **kw))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _n_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _write_images(folder, wnids, n_per_class, size=40, seed=0):
    """A few random RGB images per class, JPEG and PNG, in ImageFolder layout."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    for c, wnid in enumerate(wnids):
        d = folder / wnid
        d.mkdir(parents=True)
        for i in range(n_per_class):
            arr = (torch.rand(size, size + 8, 3, generator=gen) * 255).to(torch.uint8).numpy()
            ext = "JPEG" if i % 2 == 0 else "png"
            Image.fromarray(arr).save(d / f"{wnid}_{c}_{i}.{ext}")


@pytest.mark.slow
def test_offline_default_table(tmp_path):
    pretrained = (data_dir() / "resnet20-mnist5k.pt").is_file()
    df = _run(out_dir=tmp_path, pretrained=pretrained, command="pytest", **TINY)
    assert list(df.columns) == [*COLUMNS, "method"]  # method: derived label
    csv, md, js = (tmp_path / f"mnist5k-resnet20-mnist5k{s}" for s in (".csv", ".md", ".json"))
    assert csv.is_file() and md.is_file() and js.is_file()
    back = pd.read_csv(csv)
    assert len(back) == len(df) and list(back.columns) == COLUMNS

    assert df.attrs["provenance"]["config"]["iters"] == 2  # the config is recorded
    methods = set(df["method"])
    assert {"FP32", "vanilla", "MixQuant + vanilla", "budget + vanilla", "BRECQ",
            "MixQuant + BRECQ", "budget + BRECQ"} <= methods
    n_weights = _n_weights(resnet20())
    fp = df[df["method"] == "FP32"].iloc[0]
    assert fp["weight_bits"] == 32 and fp["weight_MB"] == pytest.approx(n_weights * 4 / 1e6)
    v8 = df[(df["method"] == "vanilla") & (df["weight_bits"] == 8)].iloc[0]
    assert v8["weight_MB"] == pytest.approx(n_weights / 1e6)
    assert df["top1"].between(0, 100).all()
    # BRECQ rows keep first/last at 8: average just above 2 bits, compared at matched width.
    brecq_rows = df[df["method"].str.contains("BRECQ")]
    assert (brecq_rows["weight_bits"] - 2.017).abs().max() < 0.01
    assert brecq_rows["matched"].dropna().str.startswith("yes").all()
    # The same plan is not reconstructed twice: its rows say so and reuse the result.
    same = brecq_rows[brecq_rows["note"].fillna("").str.startswith("same plan")]
    assert len(same) >= 1 and (same["top1"] == brecq_rows.iloc[0]["top1"]).all()

    text = md.read_text()
    assert "| section | search | quantizer |" in text and "git commit" in text and "torch" in text
    assert "`pytest`" in text
    stored = json.loads(js.read_text())
    prov = stored["provenance"]
    assert prov["brecq_settings"]["iters"] == 2 and prov["torch"] == torch.__version__
    if pretrained:
        assert fp["top1"] > 95
    # Every row keeps its per-image correctness (for paired tests): its mean is the row's top-1.
    masks = stored["per_image_correct"]
    assert len(masks) == len(df)
    for mask, acc in zip(masks, df["top1"], strict=True):
        assert set(mask) <= {"0", "1"} and len(mask) == 1000
        assert 100 * mask.count("1") / len(mask) == pytest.approx(acc)


@pytest.mark.slow
def test_cache_dir_resumes(tmp_path):
    """A second run with the same cache folder reuses every BRECQ run (same numbers, no work)."""
    kw = dict(TINY, pretrained=False, command="pytest", cache_dir=str(tmp_path / "cache"))
    first = _run(out_dir=tmp_path / "a", **kw)
    files = sorted((tmp_path / "cache").glob("brecq-*.json"))
    assert files
    stamps = [f.stat().st_mtime_ns for f in files]
    second = _run(out_dir=tmp_path / "b", **kw)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    pd.testing.assert_series_equal(first["top1"], second["top1"])


def test_matched_column():
    assert matched_label(3.05, 3.0) == "yes (+0.05)"
    assert matched_label(3.3, 3.0).startswith("no: +0.30 bit (bigger)")
    assert matched_label(2.8, 3.0).startswith("no: -0.20 bit (smaller)")


@pytest.mark.slow
def test_imagenette_layout_resnet18(tmp_path, monkeypatch, no_network):
    """Colab path end to end on a fixture in Imagenette's layout (no download: it is found)."""
    root = tmp_path / "cache"
    wnids = list(IMAGENETTE_WNIDS)[:2]
    _write_images(root / "imagenette2-160" / "train", wnids, 3)
    _write_images(root / "imagenette2-160" / "val", wnids, 2, seed=1)
    monkeypatch.setenv("MIXQUANT_LITE_CACHE", str(root))
    kw = {**TINY, "n_calib": 4}
    df = _run("resnet18", "imagenette", out_dir=tmp_path / "out", pretrained=False,
                           image_size=32, batch_size=4, **kw)
    assert (tmp_path / "out" / "imagenette-resnet18.csv").is_file()
    assert (tmp_path / "out" / "imagenette-resnet18.md").is_file()
    fp = df[df["method"] == "FP32"].iloc[0]
    assert fp["weight_MB"] == pytest.approx(_n_weights(resnet18(weights=None)) * 4 / 1e6)
    assert "BRECQ" in set(df["method"])
    prov = df.attrs["provenance"]
    assert "Imagenette-160 val (4 images" in prov["eval"]
    assert prov["calibration"].startswith("4 Imagenette-160 training images")


@pytest.mark.slow
def test_imagenet_folder_without_train_split(tmp_path):
    """``imagenet:/path``: with no sibling train folder, calibration images are a seeded sample
    of the folder and are left out of the evaluation."""
    val = tmp_path / "val"
    _write_images(val, list(IMAGENETTE_WNIDS)[2:4], 4)
    kw = {**TINY, "n_calib": 3}
    df = _run("resnet18", f"imagenet:{val}", out_dir=tmp_path / "out",
                           pretrained=False, image_size=32, batch_size=8, **kw)
    prov = df.attrs["provenance"]
    assert "(5 images)" in prov["eval"] and "excluded from evaluation" in prov["calibration"]
    assert (tmp_path / "out" / "imagenet-resnet18.csv").is_file()


def test_bad_model_dataset_pairs(tmp_path):
    with pytest.raises(ValueError, match="mnist5k"):
        _run("resnet18", "mnist5k", out_dir=tmp_path, pretrained=False, **TINY)
    with pytest.raises(ValueError, match="torchvision ResNet"):
        _run("resnet20-mnist5k", "imagenette", out_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="dataset must be"):
        _run("resnet18", "cifar10", out_dir=tmp_path, pretrained=False, **TINY)


def test_cli_builds_the_config(monkeypatch, tmp_path, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["reproduce"])
    assert args.model == "resnet20-mnist5k" and args.dataset == "mnist5k" and not args.quick
    assert args.act_bits == (None, 8) and args.out_dir == "results"
    assert cli.reproduce_config(args).iters == 20000
    args = parser.parse_args(["reproduce", "--quick", "--act-bits", "none,4", "--model",
                              "resnet18", "--dataset", "imagenet:/data/val", "--iters", "7"])
    cfg = cli.reproduce_config(args)
    assert cfg == ReproduceConfig.preset("quick", model="resnet18", dataset="imagenet:/data/val",
                                         act_bits=(None, 4), iters=7, command=cfg.command)
    assert cfg.n_calib == QUICK.n_calib and cfg.mode == "quick"
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "--act-bits", "x"])
    assert cli.main(["reproduce", "--iters", "-1"]) == 2  # validated by ReproduceConfig

    seen = {}
    md = tmp_path / "t.md"
    md.write_text("| table |\n")

    def fake_reproduce(config):
        seen["config"] = config
        df = pd.DataFrame(columns=COLUMNS)
        df.attrs["paths"] = [str(tmp_path / "t.csv"), str(md), str(tmp_path / "t.json")]
        return df

    monkeypatch.setattr("mixquant_lite.reproduce.reproduce", fake_reproduce)
    assert cli.main(["reproduce", "--quick", "--iters", "7", "--dataset", "imagenet:/d/val",
                     "--model", "resnet18"]) == 0
    assert seen["config"].quick and seen["config"].iters == 7
    assert seen["config"].dataset == "imagenet:/d/val"
    assert "| table |" in capsys.readouterr().out


def test_config_is_frozen_validated_and_recorded():
    with pytest.raises(ValueError, match="mode"):
        ReproduceConfig(mode="fast")
    with pytest.raises(ValueError, match="iters"):
        ReproduceConfig.preset("quick", iters=-1)
    with pytest.raises(ValueError, match="act_bits"):
        ReproduceConfig(act_bits=(1,))
    with pytest.raises(AttributeError):
        QUICK.iters = 3  # type: ignore[misc]
    assert QUICK.to_dict()["act_bits"] == [None, 8]


@pytest.mark.slow
def test_second_offline_model(tmp_path):
    """`reproduce --model mobilenetv2-mnist5k`: the same table for the MobileNetV2 testbed,
    its InvertedResidual blocks reconstructed as BRECQ units."""
    df = _run("mobilenetv2-mnist5k", out_dir=tmp_path, pretrained=False,
                           command="pytest", **TINY)
    assert (tmp_path / "mnist5k-mobilenetv2-mnist5k.csv").is_file()
    assert df.attrs["provenance"]["model"] == "mobilenetv2-mnist5k"
    assert {"BRECQ", "MixQuant + BRECQ", "budget + BRECQ"} <= set(df["method"])
    with pytest.raises(ValueError, match="mobilenetv2-mnist5k"):
        _run("vgg11", out_dir=tmp_path, pretrained=False, **TINY)


def _check_paired(paired, df, masks):
    """Every stored paired test is paired_compare on the two rows' stored masks."""
    from mixquant_lite.stats import paired_compare

    assert paired
    for p in paired:
        ref = paired_compare(masks[p["row_a"]], masks[p["row_b"]],
                             labels=(p["label_a"], p["label_b"]))
        assert p["verdict"] == ref.verdict and p["p_value"] == ref.p_value
        assert p["diff"] == pytest.approx(ref.diff) and p["n"] == len(masks[0])
        assert (p["only_a"], p["only_b"]) == (ref.only_a, ref.only_b)


@pytest.mark.slow
def test_markdown_has_paired_comparisons(tmp_path):
    """The TINY run: the md has the paired section, the JSON the same tests, each one
    paired_compare on the stored masks; render_markdown re-renders the same md from the files."""
    df = _run(out_dir=tmp_path, pretrained=False, command="pytest", **TINY)
    stem = tmp_path / "mnist5k-resnet20-mnist5k"
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    stored = json.loads(js.read_text())
    paired, masks = stored["paired"], stored["per_image_correct"]
    _check_paired(paired, df, masks)
    kinds = {p["kind"] for p in paired}
    assert kinds == {"vs uniform", "MixQuant vs budget"}
    # every row with a uniform reference is tested against it
    with_ref = df["compare_to"].notna() & ~df["compare_to"].fillna("").str.contains("target")
    assert sum(p["kind"] == "vs uniform" for p in paired) == int(with_ref.sum())
    assert sum(p["kind"] == "MixQuant vs budget" for p in paired) == int(
        (df["search"] == "MixQuant").sum())
    text = md.read_text()
    assert "## Paired comparisons" in text
    for p in paired:
        assert f"| {p['label_a']} | {p['label_b']} |" in text and p["verdict"] in text
    before = text.split("## Paired comparisons")[1]
    render_markdown(stem)
    assert md.read_text().split("## Paired comparisons")[1] == before
    assert json.loads(js.read_text())["paired"] == paired


def test_paired_comparisons_on_a_stored_v01_table(tmp_path):
    """A table stored with the v0.1 ``method`` column: references are found from the labels,
    the budget plan made at the same point is paired with MixQuant, a target with no uniform
    row is left out, and --render-only rewrites the md without running anything."""
    n = 200
    rng = __import__("numpy").random.default_rng(0)
    good = "".join("1" if v else "0" for v in rng.random(n) < 0.95)
    bad = "".join("1" if v else "0" for v in rng.random(n) < 0.5)
    rows = [
        ("vanilla", "vanilla", 4.0, None, None),
        ("vanilla", "MixQuant + vanilla", 4.0, "vanilla W4", "yes (+0.00)"),
        ("vanilla", "budget + vanilla", 4.0, "vanilla W4", "yes (+0.00)"),
        ("brecq", "MixQuant + vanilla", 2.5, "W2.5 target (2.516)", "yes (-0.01)"),
        ("brecq", "budget + vanilla", 2.51, "W2.5 target (2.516)", "yes (-0.00)"),
    ]
    df = pd.DataFrame([dict(section=s, method=m, qem=None, weight_bits=w, act_bits=None,
                            weight_MB=0.1, top1=0.0, wall_s=0.0, compare_to=c, matched=mt,
                            plan="4x22", note=None) for s, m, w, c, mt in rows])
    masks = [good, good, bad, bad, good]
    paired = paired_comparisons(df, masks)
    got = [(p["kind"], p["row_a"], p["row_b"]) for p in paired]
    assert got == [("vs uniform", 1, 0), ("vs uniform", 2, 0), ("MixQuant vs budget", 1, 2),
                   ("MixQuant vs budget", 3, 4)]
    _check_paired(paired, df, masks)
    assert paired[0]["only_a"] == paired[0]["only_b"] == 0 and paired[0]["p_value"] == 1.0
    assert paired[1]["verdict"] == "vanilla W4.000 better"
    assert paired[3]["verdict"] == "budget + vanilla W2.510 better"
    with pytest.raises(ValueError, match="one entry per row"):
        paired_comparisons(df, masks[:-1])

    out = tmp_path / "res"
    out.mkdir()
    df.to_csv(out / "mnist5k-resnet20-mnist5k.csv", index=False)
    prov = dict(model="resnet20-mnist5k", dataset="mnist5k", command="c", quick=True,
                brecq_settings={"iters": 2}, eval="e", calibration="c", git_commit="g",
                torch="t", device="cpu", device_name="x", threads=1, total_wall_s=1.0,
                qe_table_s=0.0, eval_s=0.0, date="d")
    (out / "mnist5k-resnet20-mnist5k.json").write_text(json.dumps(
        {"provenance": prov, "per_image_correct": masks}))
    assert cli.main(["reproduce", "--render-only", "--out-dir", str(out)]) == 0
    text = (out / "mnist5k-resnet20-mnist5k.md").read_text()
    assert "| section | method |" in text and "4 pairs: 1 A better, 2 B better, 1 ties." in text
    assert json.loads((out / "mnist5k-resnet20-mnist5k.json").read_text())["paired"] == paired
    with pytest.raises(FileNotFoundError, match="render_markdown needs"):
        render_markdown(tmp_path / "missing")


@pytest.mark.slow  # ~30 s on one thread (the whole TINY table plus the GPTQ point)
def test_gptq_rows_with_paired_comparisons(tmp_path):
    """A TINY run with a GPTQ point on per-group grids: uniform, MixQuant and budget GPTQ rows,
    the MixQuant/budget ones paired with the uniform GPTQ row; the run list counts them."""
    from mixquant_lite.reproduce import gptq_schedule, workload

    kw = {**TINY, "gptq_bits": (3,), "gptq_granularity": "per_group", "gptq_group_size": 32}
    cfg = ReproduceConfig.preset("full", out_dir=tmp_path, pretrained=False, command="pytest",
                                 **kw)
    assert gptq_schedule(cfg) == [(3, ("uniform", "MixQuant", "budget"))]
    assert workload(cfg)["gptq_runs"] == 3
    assert workload(cfg)["evals"] == workload(ReproduceConfig.preset("full", **TINY))["evals"] + 3
    df = reproduce(cfg)
    g = df[df["section"] == "gptq"]
    assert list(g["search"]) == ["uniform", "MixQuant", "budget"]
    assert set(g["quantizer"]) == {"GPTQ"} and g["act_bits"].isna().all()
    # true bits: a float32 step + 3-bit zero per 32 weights (+ 35/32 bits) on the layers that fit
    assert (g["bits_per_weight"] > g["weight_bits"] + 0.5).all()
    v = df[df["section"] == "vanilla"].iloc[1:]  # per-tensor grids: a few bits per layer
    assert ((v["bits_per_weight"] - v["weight_bits"]).between(0, 0.01)).all()
    assert (g["compare_to"].iloc[1:] == "GPTQ W3 (first/last 8)").all()
    stored = json.loads((tmp_path / "mnist5k-resnet20-mnist5k.json").read_text())
    pairs = paired_comparisons(df, stored["per_image_correct"])
    kinds = sorted(p["kind"] for p in pairs if p["section"] == "gptq")
    assert kinds == ["MixQuant vs budget", "vs uniform", "vs uniform"]
    rep = stored["brecq_reports"]["GPTQ W3 (first/last 8)"]
    assert rep["bits_per_weight"] > 3 and "conv1" in rep["fallback"]  # K = 9: per channel


def test_cli_gptq_options(monkeypatch):
    monkeypatch.setattr("sys.argv", ["mixquant-lite", "reproduce"])
    parse = cli.build_parser().parse_args
    cfg = cli.reproduce_config(parse(["reproduce", "--quick", "--gptq-bits", "4", "2",
                                      "--granularity", "per_group", "--group-size", "64"]))
    assert cfg.gptq_bits == (4, 2) and cfg.gptq_spec.group_size == 64
    assert cli.reproduce_config(parse(["reproduce", "--gptq-bits"])).gptq_bits == ()
    assert QUICK.gptq_bits == (3,) and cli.reproduce_config(parse(["reproduce"])).gptq_bits \
        == (4, 3, 2)
    with pytest.raises(cli.CLIError, match="group_size"):
        cli.reproduce_config(parse(["reproduce", "--granularity", "per_group"]))
    with pytest.raises(cli.CLIError, match="group_size"):
        cli.reproduce_config(parse(["reproduce", "--group-size", "48",
                                    "--granularity", "per_group"]))
