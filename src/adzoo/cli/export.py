"""``adzoo-export ckpt=<run folder or .ckpt> [output=<folder>] [format=torchscript,onnx]``."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = __doc__.strip()


def main(argv: list[str] | None = None) -> int:
    options: dict[str, str] = {}
    for token in sys.argv[1:] if argv is None else argv:
        if token in ("-h", "--help"):
            print(f"usage: {USAGE}\n\nTraces the trained method (eval forward: images in [0,1] → score, map) to "
                  "TorchScript and ONNX; each export is checked against the eager model.")  # fmt: skip
            return 0
        key, sep, value = token.partition("=")
        if not sep or key not in ("ckpt", "output", "format"):
            raise SystemExit(f"adzoo-export: expected ckpt=, output= or format=, got {token!r}\nusage: {USAGE}")
        options[key] = value
    if "ckpt" not in options:
        raise SystemExit(f"adzoo-export: ckpt= is required\nusage: {USAGE}")
    from adzoo.export import export_run

    formats = tuple(f.strip() for f in options.get("format", "torchscript,onnx").split(",") if f.strip())
    output = Path(options.get("output", Path(options["ckpt"]) / "export"))
    for fmt, result in export_run(Path(options["ckpt"]), output, formats).items():
        print(f"{fmt}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
