"""Write the transformer study's results: JSON + Markdown + per-item ``.npz``, and the costs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_DAMAGE = {"cosine": "1 - cosine to FP32", "nll": "increase of held-out nats/char"}


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"


def _md_q1(rows: list[dict]) -> list[str]:
    out = ["| predictor | bits | layer type | Spearman rho [95% CI, layers resampled] | "
           "p (Holm) | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['predictor']} | {r['bits']} | {r['layer_type']} | {r['rho']:.2f} "
                   f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {r['p_holm']:.3g} | "
                   f"{r['verdict']} |")
    return out


def _md_q2(rows: list[dict]) -> list[str]:
    out = ["| quantizer | avg bits | metric | plan-qe | other | other's value | difference "
           "(plan-qe - other) [95% CI] | test | p (Holm) | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['quantizer']} | {r['avg_bits']} | {r['metric']} | "
                   f"{_fmt(r['mean_a'])} | {r['b']} | {_fmt(r['mean_b'])} | {_fmt(r['diff'])} "
                   f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['test']} | "
                   f"{r['p_holm']:.3g} | {r['verdict']} |")
    return out


def costs_markdown(res: dict) -> list[str]:
    c = res["costs"]
    out = [f"One FP32 forward pass over the calibration set ({c['n_calib']} windows, shape "
           f"{c['calib_shape']}): {c['fp32_forward_calib_seconds']:.2f} s "
           f"({res['provenance']['threads']} thread).", "",
           "| step | seconds | ratio to one FP32 forward over the calibration set |",
           "|---|---|---|"]
    for m, v in c["measures"].items():
        out.append(f"| table `{m}` (bits {res['tables']['qe']['bits']}) | {v['seconds']:.1f} | "
                   f"{v['ratio_to_fp32_forward']:.1f}x |")
    for k, v in c.get("qe_table_bits_2_to_8", {}).items():
        out.append(f"| QE table, bits 2..8, {k} ({v['layers']} layers, {v['weights']:,} "
                   f"weights) | {v['seconds']:.2f} | {v['ratio_to_fp32_forward']:.2f}x |")
    for k, v in c["brecq"].items():
        out.append(f"| BRECQ {k} ({v['iters']} steps per unit) | {v['seconds']:.1f} | "
                   f"{v['ratio_to_fp32_forward']:.1f}x |")
    return out


def write(res: dict, root: Path) -> None:
    name = res["testbed"]
    items = res.pop("items")
    fp32_items = res.pop("fp32_items")
    per_item = res.pop("damage_per_item_3bit")
    arrays = {"damage_3bit": np.asarray(per_item, dtype=np.float32),
              "damage_items": np.asarray(res["damage_items"])}
    for k, v in fp32_items.items():
        arrays[f"fp32::{k}"] = np.asarray(v, dtype=np.float32)
    for key, o in items.items():
        for m, v in o.items():
            arrays[f"{key}::{m}"] = np.asarray(v, dtype=np.float32)
    (root / "results").mkdir(exist_ok=True)
    np.savez_compressed(root / "results" / f"transformer-{name}-items.npz", **arrays)
    (root / "results" / f"transformer-{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    fp = ", ".join(f"{k} {_fmt(v)}" for k, v in res["fp32"].items())
    md = [f"# Transformer study: {name}", "",
          f"FP32: {fp}. Per-output-channel round-to-nearest on all {len(res['layers'])} "
          "quantizable layers, float activations.", "",
          "## Costs", "", *costs_markdown(res), "",
          "## Q1: does each measure rank the single-layer damage?", "",
          f"Damage: mean {_DAMAGE[res['damage_metric']]} over {len(res['damage_items'])} "
          "items, each layer alone.", "",
          *_md_q1(res["q1"]), "",
          "## Q2: at matched average bits", "",
          "| plan | avg bits | " + " | ".join(res["metrics"]) + " |",
          "|---|---|" + "---|" * len(res["metrics"])]
    for k, v in res["plans"].items():
        md.append(f"| {k} | {v['avg_bits']:.3f} | "
                  + " | ".join(_fmt(v["summary"][m]) for m in res["metrics"]) + " |")
    md += ["", *_md_q2(res["q2"]), "", f"Provenance: {json.dumps(res['provenance'])}", ""]
    (root / "results" / f"transformer-{name}.md").write_text("\n".join(md))
    bench = {"testbed": name, **res["costs"], "provenance": res["provenance"]}
    (root / "benchmarks" / "results" / f"transformer_costs-{name}.json").write_text(
        json.dumps(bench, indent=1) + "\n")
    (root / "benchmarks" / "results" / f"transformer_costs-{name}.md").write_text(
        "\n".join([f"# Costs on {name} (this CPU)", "", *costs_markdown(res), "",
                   f"Provenance: {json.dumps(res['provenance'])}", ""]))
