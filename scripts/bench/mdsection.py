"""Replaces (or appends) one `## ` section of a Markdown file: what every table writer in
scripts/bench/ does with docs/benchmarks.md (standard library only)."""
from pathlib import Path


def replace_section(md: Path, lines: list[str]) -> str:
    """Writes `lines` (whose first line is the `## ` heading) in place of the section with
    that heading in `md` (up to the next `## ` heading), or at the end; returns the text."""
    heading = lines[0]
    new = "\n".join(lines).rstrip("\n")
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + new + ("\n" + text[end:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + new
    md.write_text(text.rstrip("\n") + "\n")
    return new


def section_lines(md: Path, heading: str) -> list[str]:
    """The lines of the section with `heading` in `md` (empty when there is none)."""
    if not md.exists():
        return []
    text = md.read_text()
    start = text.find(heading + "\n")
    if start < 0:
        return []
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else None].splitlines()


def table_rows(md: Path, heading: str) -> list[tuple[str, str]]:
    """The body rows of the tables in a section, as (first cell, whole line), in order: what
    a table writer keeps of an earlier run for the rows it cannot recompute."""
    rows = []
    for line in section_lines(md, heading):
        cells = [c.strip() for c in line.split("|")]
        if line.startswith("| ") and len(cells) > 3 and not set(cells[1]) <= set("-:"):
            rows.append((cells[1], line))
    return rows[1:] if rows else rows  # the first is the header


# The processor the unlabelled rows of docs/benchmarks.md were trained on.
REFERENCE_CPU = "Intel(R) Xeon"


def machine_label() -> str:
    """"" on the machine the unlabelled training rows of docs/benchmarks.md were measured on
    (an Intel Xeon with AVX-512), else " [<CPU model>]": training results are exact per
    processor only (README, "Which numbers reproduce where"), so a row trained on another
    machine carries its processor, and gains are taken against a baseline of the same
    label only."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                return "" if REFERENCE_CPU in model else f" [{model}]"
    except OSError:
        pass
    import platform
    return f" [{platform.processor() or platform.machine()}]"


def merged_rows(name: str, kept: dict, label: str, computed: str | None) -> list[str]:
    """The table rows of `name`: the rows an earlier run wrote for it (`kept`, by first
    cell: the plain name and machine-labelled ones, `name [CPU]`), but the one recomputed
    now (`computed`, labelled `name + label`; None when its cells are not here)."""
    rows = [line for key, line in kept.items()
            if (key == name or (key.startswith(name + " [") and key.endswith("]")))
            and not (computed is not None and key == name + label)]
    if computed is not None:
        rows.append(computed)
    return rows
