"""Writes the "## FGD ablation" section of docs/benchmarks.md (issue #21) from the cells of
scripts/ablate-fgd.sh (RUNS/ablate/<variant>-seed<S>) and the benchmark's baseline and FGD
cells (RUNS/bench/distill/{baseline,fgd}-seed<S>; fgd-t2_x65 is the shipped FGD recipe, so its
cells are the benchmark's FGD cells), standard library only:

    python3 scripts/bench/fgd_ablation_table.py runs docs/benchmarks.md

Gain = the variant's mean box AP minus its reference's over the seeds both have (the
baseline; for fgd-narrow, baseline-narrow), per seed the same seed's runs, gain/σ over the
pooled sample standard deviation (as scripts/bench/distill_table.py). The term columns are
each FGD term's logged value (already multiplied by its coefficient and the recipe weight,
as it enters the loss) averaged over the training log, beside the task losses' sum: how
much of the objective each part of FGD is.

A row whose cells are not under RUNS (a fresh checkout has none), a tuning score not in
RUNS/tune/eval and the probe's output when RUNS/ablate/probe.txt is absent are kept as the
last run of this script wrote them into BENCHMARKS_MD. A row computed here is labelled
with this machine's processor when it is not the reference one (mdsection.machine_label).
"""
import json
import math
import statistics
import sys
from pathlib import Path

from distill_table import load, mean_std, fmt
from mdsection import machine_label, merged_rows, replace_section, section_lines

BEGIN = "## FGD ablation"
TERMS = ["fg", "bg", "attention", "global"]
# (variant, reference, what changes); every cell in runs/ablate/<variant>-seed<S> (but
# fgd-t2_x65's: cell_dir).
VARIANTS = [
    ("fgd-official", "baseline",
     "the reference: FGD's official τ 0.5, γ 5e-4, λ 5e-6 (shipped before #21); inherit, weight 0.002175"),
    ("fgd-inherit_only", "baseline", "inherit only (FGD weight 0)"),
    ("fgd-no_inherit", "baseline", "FGD without inherit"),
    ("fgd-focal_only", "baseline", "fg + bg only (γ = λ = 0)"),
    ("fgd-attention_only_x65", "baseline", "attention only, γ × 65"),
    ("fgd-global_only_x65", "baseline", "global only, λ × 65"),
    ("fgd-p3", "baseline", "taps: P3 only (official: every FPN level)"),
    ("fgd-t2", "baseline", "temperature 2 instead of 0.5"),
    ("fgd-x65", "baseline", "all terms, γ and λ × 65"),
    ("fgd-t2_x65", "baseline", "temperature 2, γ and λ × 65: **the recipe shipped since** (= the FGD row above)"),
    ("fgd-shipped_p3", "baseline", "the shipped recipe (t2_x65), taps: P3 only"),
    ("fgd-shipped_backbone", "baseline",
     "the shipped recipe (t2_x65), taps: backbone C3-C5 instead of the FPN, 1×1 connector"),
    ("fgd-frozen_tgc", "baseline",
     "the shipped recipe (t2_x65) with the teacher-side GcBlocks frozen at init, an identity map "
     "(official: they train with the student's optimizer and learning rate)"),
    ("baseline-narrow", None, "half-width student alone (reference of the rows below)"),
    ("fgd-narrow", "baseline-narrow", "official FGD into the half-width student (1×1 connector, no inherit)"),
    ("fgd-shipped_narrow", "baseline-narrow",
     "the shipped recipe (t2_x65) into the half-width student (1×1 connector, no inherit)"),
]


# The cells scored on the tuning split (runs/tune/eval/<name>.json).
TUNING = [
    ("baseline-x1", "the baseline (scripts/tune-distill.sh)"),
    ("fgd-official", "FGD's official τ 0.5, γ 5e-4, λ 5e-6"),
    ("fgd-t2", "τ 2"),
    ("fgd-x65", "γ and λ × 65"),
    ("fgd-t2_x65", "τ 2, γ and λ × 65"),
]


def cell_dir(runs: Path, name: str, seed: str) -> Path:
    if name == "baseline":
        return runs / "bench" / "distill" / f"{name}-seed{seed}"
    if name == "fgd-t2_x65":  # the shipped recipe: its cells are the benchmark's FGD cells
        return runs / "bench" / "distill" / f"fgd-seed{seed}"
    return runs / "ablate" / f"{name}-seed{seed}"


def kept_blocks(md: Path) -> tuple[list[dict], list[str]]:
    """What the last run of this script wrote: each table of the section as {first cell:
    line}, in order, and the probe's code block, for the rows and the block whose cells or
    file are not on this machine now (a fresh checkout has no runs/)."""
    tables, code, current, in_code = [], [], None, False
    for line in section_lines(md, BEGIN):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            code.append(line)
        elif line.startswith("|"):
            if current is None:
                current = {}
                tables.append(current)
            current[line.split("|")[1].strip()] = line
        else:
            current = None
    return tables, code


def term_means(run: Path) -> dict:
    """Mean of each logged FGD term and of the task losses' sum over the training log."""
    sums, counts = {}, {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        losses = rec.get("losses")
        if not losses:
            continue
        task = sum(v for k, v in losses.items() if k.startswith("loss") and v is not None)
        values = {"task": task}
        for t in TERMS:
            v = losses.get(f"kd.fgd.{t}")
            if v is not None:
                values[t] = v
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def cells(runs: Path, name: str) -> dict:
    out = {}
    for seed in ["0", "1", "2"]:
        d = cell_dir(runs, name, seed)
        r = load(d)
        if r:
            r["terms"] = term_means(d)
            out[seed] = r
    return out


def rows_of(runs: Path, name: str, ref: str | None, change: str, kept: dict) -> list[str]:
    """The rows of one variant: the one of its cells here (labelled with this machine's
    processor where it is not the reference one) and those an earlier run wrote."""
    machine = machine_label()
    mine = row(runs, name, ref, change, machine)
    merged = merged_rows(name, kept, machine, mine)
    return merged or [f"| {name} | {change} | – | n/a | | | | | | | | |"]


def row(runs: Path, name: str, ref: str | None, change: str, machine: str) -> str | None:
    mine = cells(runs, name)
    if not mine:
        return None
    used = sorted(mine)
    ap = fmt([mine[s]["stats"][0] for s in used])
    gain = per_seed = ratio = ""
    if ref:
        base = cells(runs, ref)
        both = [s for s in used if s in base]
        if both:
            m, sd_m = mean_std([mine[s]["stats"][0] for s in both])
            b, sd_b = mean_std([base[s]["stats"][0] for s in both])
            gain = f"{(m - b) * 100:+.1f}"
            per_seed = ", ".join(
                f"{(mine[s]['stats'][0] - base[s]['stats'][0]) * 100:+.1f}" for s in both)
            if sd_m is not None and sd_b is not None:
                pooled = math.sqrt((sd_m**2 + sd_b**2) / 2)
                ratio = f"{(m - b) / pooled:.1f}" if pooled > 0 else "inf"
    terms = []
    for t in ["task"] + TERMS:
        vals = [mine[s]["terms"][t] for s in used if t in mine[s]["terms"]]
        terms.append(f"{statistics.mean(vals):.3g}" if vals else "")
    return (f"| {name}{machine} | {change} | {', '.join(used)} | {ap} | {gain} | {per_seed} | {ratio} | "
            + " | ".join(terms) + " |")


def main() -> None:
    runs, md = Path(sys.argv[1]), Path(sys.argv[2])
    tables, kept_probe = kept_blocks(md)
    kept_rows = tables[0] if tables else {}
    kept_scores = tables[1] if len(tables) > 1 else {}
    rows = [r for name, ref, change in VARIANTS for r in rows_of(runs, name, ref, change, kept_rows)]
    section = [
        BEGIN,
        "",
        "Why FGD's gain was thin here (issue #21): the FGD recipe",
        "(`configs/distill/fgd_gfl_synth.toml`) at FGD's official temperature and",
        "coefficients (`fgd-official`, the recipe shipped until then) with one thing changed",
        "per row (rows saying \"the shipped recipe\" change one thing of the recipe shipped",
        "since, `fgd-t2_x65`, instead),",
        "on the distillation benchmark's schedule, teacher, data order and val split (box AP ×100,",
        "mean ± sample std over seeds). Gain is against the baseline of the same seeds (for",
        "`fgd-narrow`, against `baseline-narrow`); gain/σ uses the pooled sample std. The last",
        "five columns are the mean logged value over training of the task losses' sum and of",
        "each FGD term as it enters the objective (coefficient and recipe weight applied).",
        "× 65: γ and λ multiplied by 1333·800 / 128² ≈ 65, the ratio of positions between",
        "a COCO image and a built-in one (FGD's global and attention losses are sums over",
        "positions; its focal losses are not).",
        "Produced by `bash scripts/ablate-fgd.sh` (cells in `runs/ablate/`, resumable;",
        "`bash scripts/ablate-fgd.sh --list` prints each variant's `--set` overrides) and",
        "`bash scripts/bench-distill.sh` (baseline and FGD cells; `fgd-t2_x65`'s cells are the",
        "benchmark's FGD cells). A row whose cells are not in `runs/` when the script runs is",
        "kept as its last run wrote it. Unlabelled rows were trained on an Intel Xeon with",
        "AVX-512, a row labelled `[CPU]` on that processor, each against the baseline cells",
        "of its own processor (\"Distillation on the built-in data\" has both baselines).",
        "",
        "| variant | change | seeds | AP | gain | gain per seed | gain/σ | task | fg | bg | attention | global |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Read together (numbers above; same machine and seeds for each comparison): at the",
        "official temperature and coefficients FGD's attention and global terms are under",
        "1% of the objective, and the focal terms alone do as well as the whole loss (and",
        "FGD without the inherited head and neck gains nothing); scaling γ and λ to the",
        "built-in images' positions (× 65) or a softer spatial attention (τ 2) each doubles",
        "or triples the gain, and the shipped recipe has both. The shipped recipe's gain",
        "needs the FPN levels FGD's official detectors distil (P3 alone or the backbone",
        "give less) and does not depend on training the teacher-side GcBlock (frozen at its",
        "identity init: within seed noise). In the half-width student (nothing to",
        "inherit), official FGD gained nothing and the shipped recipe +2.1 (each against",
        "its machine's half-width baseline).",
        "",
    ]
    scores = []
    machine = machine_label()
    for name, what in TUNING:
        f = runs / "tune" / "eval" / f"{name}.json"
        score = None
        if f.exists():
            stats = json.loads(f.read_text())["stats"]
            score = (f"| {name}{machine} | {what} | {stats['AP'] * 100:.1f} | "
                     f"{stats['AP50'] * 100:.1f} |")
        scores += merged_rows(name, kept_scores, machine, score)
    if scores:
        section += [
            "Choosing the recipe shipped since: the official coefficients and the three",
            "candidates (seed-0 cells of the rows above) scored on the tuning split of",
            "`scripts/tune-distill.sh` (250 val images of `kdet data synth --seed 1`, never the",
            "reported split), by `bash scripts/ablate-fgd.sh`; the best one is shipped. This is",
            "a second tuning round for FGD (its weight was tuned first, as every method's): three",
            "runs no other method got. Rows labelled `[CPU]` are the same cells' recipes",
            "trained and scored on that processor (the choice was made on the unlabelled ones).",
            "",
            "| cell | what | tuning AP | tuning AP50 |",
            "|---|---|---:|---:|",
            *scores,
            "",
        ]
    probe = runs / "ablate" / "probe.txt"
    probe_lines = (probe.read_text().rstrip("\n").splitlines() if probe.exists()
                   else kept_probe)
    if probe_lines:
        section += [
            "What FGD's temperature does to the teacher's spatial attention here",
            "(`cargo run --release --example fgd_probe -p kdet-run -- 8 0.5 1 2 5`: the",
            "shipped teacher on the first 64 training images; `mean|F|` / `std|F|`: mean and",
            "spread over positions of `mean_c |F|`, what `softmax(· / τ)` sees; `top1%`: the",
            "attention mass on the 1% most attended positions; `fg A` / `bg A`: the",
            "attention-weighted mass of the foreground mask (one unit per object) and of the",
            "background mask (one unit per image), the factors besides the feature difference",
            "that multiply α and β):",
            "",
            "```text",
            *probe_lines,
            "```",
            "",
        ]
    print(replace_section(md, section))


if __name__ == "__main__":
    main()
