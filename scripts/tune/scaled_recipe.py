"""Prints the `--set` arguments that multiply every KD weight of a distillation recipe by a
factor (standard library only; one argument per line). Used by scripts/tune-distill.sh:

    mapfile -t sets < <(python3 scripts/tune/scaled_recipe.py KDET RECIPE.toml FACTOR [BASE_WEIGHT])
    KDET distill --config RECIPE.toml "${sets[@]}" ...

The recipe is read as kdet resolves it (`KDET config print --config RECIPE.toml`: its
`extends` chain and defaults), so no TOML is edited here. Each `[[distill.losses]]` entry `i`
gets `--set=distill.losses.i.weight=W`, W = weight * FACTOR, or, with BASE_WEIGHT
(one-entry recipes only), BASE_WEIGHT * FACTOR: the factor then applies to a weight the
recipe no longer ships (the calibrated one, before tuning).
"""
import subprocess
import sys
import tomllib


def main():
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__)
    kdet, recipe, factor = sys.argv[1], sys.argv[2], float(sys.argv[3])
    printed = subprocess.run([kdet, "config", "print", "--config", recipe],
                             check=True, capture_output=True, text=True).stdout
    losses = tomllib.loads(printed).get("distill", {}).get("losses", [])
    if not losses:
        raise SystemExit(f"{recipe}: no [[distill.losses]] entry to scale")
    if len(sys.argv) == 5:
        if len(losses) != 1:
            raise SystemExit(f"{recipe}: BASE_WEIGHT needs a one-entry recipe")
        losses[0]["weight"] = float(sys.argv[4])
    for i, entry in enumerate(losses):
        weight = float("%.6g" % (entry["weight"] * factor))
        print(f"--set=distill.losses.{i}.weight={weight!r}")


if __name__ == "__main__":
    main()
