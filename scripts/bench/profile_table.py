"""Writes "## Where the time goes: per-op profile of burn-flex" in docs/benchmarks.md from
`perf script` output of scripts/bench-profile.sh (standard library only).

Usage: perf script -F ip,sym | python3 profile_table.py BENCHMARKS_MD [COMMAND]

Each sample's call stack (kdet ran single-threaded, so every op runs on the stack of the
code that called it) is assigned to the first category below whose pattern one of its
frames contains; samples outside the timed steps (start-up: reading the checkpoint, the
data, building the models) are left out.
"""
import platform
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mdsection import replace_section

BEGIN = "## Where the time goes: per-op profile of burn-flex"

RULES = [
    ("conv2d weight gradient (backward)", ["conv2d_weight_backward"]),
    ("conv2d input gradient (backward)", ["conv2d_x_backward"]),
    ("conv2d forward", ["for burn_flex::backend::Flex>::conv2d", "burn_flex::ops::conv::conv2d_f32"]),
    ("batch norm (forward and backward)", ["batch_norm"]),
    ("group norm (forward and backward)", ["group_norm", "GroupNorm"]),
    ("ReLU (forward and backward)", ["relu"]),
    ("ATSS assignment", ["kdet_models::assigners"]),
    ("task losses (QFL, DFL, GIoU)", ["DenseHead::loss", "heads::gfl::loss"]),
    ("KD losses (LD)", ["kdet_distill::losses", "Distiller::entry_terms"]),
    ("optimizer update (AdamW)", ["burn_optim"]),
    ("backward of other ops (elementwise, reshapes, ...)", ["backward_impl"]),
    ("forward, other ops (upsampling, adds, ...)", ["Detector::forward"]),
]
STEP = ["Trainer<M,D>::bench_step", "kdet_models::detector::Detector::forward"]
SETUP = ["Checkpoint::read", "Distiller::new", "load_train_split", "student_model", "kdet_data::loader"]


def samples(lines):
    stack = []
    for line in lines:
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line.startswith(("\t", " ")):
            parts = line.strip().split(None, 1)
            stack.append(parts[1] if len(parts) > 1 else "")
    if stack:
        yield stack


def main() -> None:
    md = Path(sys.argv[1])
    command = sys.argv[2] if len(sys.argv) > 2 else ""
    counts, total, outside, truncated = Counter(), 0, 0, 0
    for stack in samples(sys.stdin):
        text = "\n".join(stack)
        if any(p in text for p in SETUP):
            outside += 1
            continue
        if not any(p in text for p in STEP):
            if "bench_train::bench" in text:
                outside += 1
            else:
                truncated += 1
            continue
        total += 1
        for name, pats in RULES:
            if any(p in text for p in pats):
                counts[name] += 1
                break
        else:
            counts["other (step bookkeeping, allocation)"] += 1
    rows = [f"| {name} | {100 * n / total:.1f} % | {n} |" for name, n in counts.most_common()]
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    section = [
        BEGIN,
        "",
        "Which burn-flex ops the distillation benchmark's steps spend their time in: `perf record`",
        "(cpu-clock sampling, DWARF call stacks) of `kdet bench train` with the LD recipe run on",
        "one thread (`--threads 1`, so every op runs on its caller's stack), all three phases",
        "(student step, teacher forward, distill step); each sample goes to the first matching",
        "category, start-up excluded. Shares of the sampled step time (they hold for 2 threads",
        "only roughly: convolutions parallelise better than the small ops).",
        f"Machine: {cpu} cores, {platform.machine()}. Produced by `bash scripts/bench-profile.sh`"
        + (f" (`{command}`)." if command else "."),
        "",
        "| op | share of step samples | samples |",
        "|---|---:|---:|",
        *rows,
        "",
        f"{total} samples in the steps; {outside} in start-up (left out); {truncated} with a stack"
        " perf could not unwind to its caller (left out).",
        "",
    ]
    print(replace_section(md, section))


if __name__ == "__main__":
    main()
