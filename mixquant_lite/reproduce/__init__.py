"""``mixquant-lite reproduce``: the results table (MixQuant + vanilla PTQ, + BRECQ, + GPTQ).

    mixquant-lite reproduce --quick                       # offline default, CPU, < 15 min
    mixquant-lite reproduce                               # BRECQ recipe settings (hours on CPU)
    mixquant-lite reproduce --model resnet18 --dataset imagenette   # Colab / GPU path
    python -c "from mixquant_lite.reproduce import QUICK, reproduce; reproduce(QUICK)"

Writes ``<out_dir>/<dataset>-<model>.csv``, ``.md`` (table + provenance) and ``.json``
(provenance). One row per quantized model:

``section``
    ``vanilla``: everything as the MixQuant rule decides, first and last layer included
    (``mixquant(table, qem)``, no fixed layers), vanilla asymmetric round-to-nearest on the
    unfolded model (:meth:`BitPlan.apply`).
    ``brecq``: the BRECQ recipe's setting, first and last layer at 8 bits for *every* method
    (``fixed={first: 8, last: 8}``), so that vanilla, BRECQ, MixQuant + BRECQ and budget plan +
    BRECQ rows compare like with like. BRECQ quantizes BatchNorm-folded weights, so its plans come
    from the QE table of the folded model; the vanilla rows of this section quantize the unfolded
    weights (BatchNorm kept in float, the package's vanilla PTQ), which is the easier problem.
    ``gptq``: the same first/last-8 plans at ``config.gptq_bits`` (uniform, MixQuant, budget,
    from the folded QE table) quantized with GPTQ on the folded weights, on the grid
    ``config.gptq_spec`` (per group with ``--granularity per_group --group-size g``); weights
    only. Their true bits per weight (grids included) and fallback layers are in the JSON
    reports (:mod:`.gptq_rows`).
``search``, ``quantizer``
    how the bit-widths were chosen: ``none`` (the FP32 row), ``uniform``, ``MixQuant`` or
    ``budget`` (:func:`plan_for_budget`, least total squared weight error at the same average
    bit-width); and how the weights were quantized: ``FP32``, ``vanilla`` (round-to-nearest),
    ``BRECQ`` or ``GPTQ``. The returned DataFrame adds the v0.1 one-string ``method`` label
    (:func:`method_label`: ``vanilla``, ``MixQuant + BRECQ``...), derived from these two.
``weight_bits``
    average weight bit-width actually achieved, weighted by each layer's number of weights.
``bits_per_weight``
    true storage per weight, grids included (:meth:`BitPlan.storage`: a float32 step and a
    ``b``-bit zero point per grid, per-group layers no group fits counted per channel): the
    number to compare per-group and per-channel rows by.
``act_bits``
    activation bit-width (empty: float activations).
``weight_MB``
    weight storage, ``sum(numel * bits) / 8 / 1e6`` (biases and quantization grids excluded).
``top1``
    top-1 accuracy (%) on the evaluation split.
``wall_s``
    seconds to produce the quantized model (search + quantization or reconstruction); the QE
    tables and the evaluations are not included (provenance lists them).
``compare_to``, ``matched``
    the uniform row at the nearest average bit-width in the same section (and activation
    setting), and whether this row's average is within 0.1 bit of it; when not, by how much the
    plan is bigger or smaller.
``plan``
    the bit-width histogram, ``bits x layers``.

MixQuant at a target average bit-width uses the QEM whose plan's average is closest to the
target (ties: the smaller plan); the budget plan uses ``plan_for_budget(avg_bits=target)``. A
plan identical to one already run is not run again (its row says so in ``note``).

From Python: ``reproduce(QUICK)``, or ``reproduce(ReproduceConfig.preset("quick", iters=50))``
(:mod:`.config`); the modules: :mod:`.config`, :mod:`.run` (driver and its run list),
:mod:`.gptq_rows` (section ``gptq``),
:mod:`.table` (columns, row labels), :mod:`.paired` (paired comparisons), :mod:`.report`
(markdown, provenance, files), :mod:`.timing` (run-time estimate).
"""
from .config import FULL, QUICK, ReproduceConfig
from .gptq_rows import gptq_schedule
from .paired import paired_comparisons
from .report import render_markdown
from .run import brecq_schedule, reproduce, workload
from .table import COLUMNS, method_label

__all__ = ["reproduce", "ReproduceConfig", "QUICK", "FULL", "COLUMNS", "brecq_schedule",
           "gptq_schedule", "workload", "render_markdown", "paired_comparisons", "method_label"]
