"""Writes an experiment file that extends a distillation recipe with every KD weight
multiplied by a factor (standard library only). Used by scripts/tune-distill.sh.

Usage: python3 scaled_recipe.py RECIPE.toml FACTOR OUT.toml [BASE_WEIGHT]

The output `extends` RECIPE.toml (absolute path) and replaces its `[distill]` table:
`inherit` is kept, each `[[distill.losses]]` entry is copied with `weight * FACTOR`, or,
with BASE_WEIGHT (one-entry recipes only), with `BASE_WEIGHT * FACTOR`: the factor then
applies to a weight the recipe no longer ships (the calibrated one, before tuning).
"""
import sys
import tomllib
from pathlib import Path


def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
    raise SystemExit(f"scaled_recipe.py: cannot write a {type(v).__name__} value")


def main():
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__)
    recipe, factor, out = Path(sys.argv[1]).resolve(), float(sys.argv[2]), Path(sys.argv[3])
    distill = tomllib.loads(recipe.read_text()).get("distill", {})
    losses = distill.get("losses", [])
    if not losses:
        raise SystemExit(f"{recipe}: no [[distill.losses]] entry to scale")
    if len(sys.argv) == 5:
        if len(losses) != 1:
            raise SystemExit(f"{recipe}: BASE_WEIGHT needs a one-entry recipe")
        losses[0]["weight"] = float(sys.argv[4])
    lines = [
        f"# {recipe.name} with every KD weight x {factor:g} (scripts/tune-distill.sh).",
        f"extends = {value(str(recipe))}",
        "",
        "[distill]",
        f"inherit = {value(bool(distill.get('inherit', False)))}",
    ]
    for entry in losses:
        lines += ["", "[[distill.losses]]"]
        for k, v in entry.items():
            if k == "weight":
                v = float(f"{v * factor:.6g}")
            lines.append(f"{k} = {value(v)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
