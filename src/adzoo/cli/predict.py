"""``adzoo-predict ckpt=<run folder or .ckpt> input=<folder> [output=<folder>] [device=cpu] [batch_size=16]``."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = __doc__.strip()


def parse(argv: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for token in argv:
        if token in ("-h", "--help"):
            raise SystemExit(
                f"usage: {USAGE}\n\nScores every image under input/ (recursively) with a trained run "
                "and writes output/scores.csv and output/maps/*.png (image | map overlay)."
            )
        if "=" not in token:
            raise SystemExit(f"adzoo-predict: expected key=value, got {token!r}\nusage: {USAGE}")
        key, value = token.split("=", 1)
        if key not in ("ckpt", "input", "output", "device", "batch_size"):
            raise SystemExit(f"adzoo-predict: unknown key {key!r}\nusage: {USAGE}")
        options[key] = value
    for key in ("ckpt", "input"):
        if key not in options:
            raise SystemExit(f"adzoo-predict: {key}= is required\nusage: {USAGE}")
    return options


def main(argv: list[str] | None = None) -> int:
    from adzoo.predict import predict_folder

    options = parse(sys.argv[1:] if argv is None else argv)
    output = Path(options.get("output", Path(options["input"]).name + "_predictions"))
    rows = predict_folder(
        Path(options["ckpt"]), Path(options["input"]), output,
        batch_size=int(options.get("batch_size", 16)), device=options.get("device", "cpu"),
    )  # fmt: skip
    print(f"scored {len(rows)} images → {output / 'scores.csv'}, maps in {output / 'maps'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
