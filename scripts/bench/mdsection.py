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
