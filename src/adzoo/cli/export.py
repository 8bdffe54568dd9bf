"""``adzoo-export ckpt=<run folder or .ckpt> [output=<folder>] [format=torchscript,onnx] [category=<name>]``.

A mistake (an unknown key or format, a missing or truncated checkpoint, a run folder whose config names code
outside the allow-list) prints one line, ``adzoo-export: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from adzoo.cli.predict import parse, usage
from adzoo.errors import run_app

PROG = "adzoo-export"
KEYS = {
    "ckpt": "run folder, category folder or .ckpt file written by adzoo-train (required)",
    "output": "folder for model.ts / model.onnx (default: <run>/export, <run>/categories/<name>/export)",
    "format": "comma-separated: torchscript, onnx (default both)",
    "category": "which model of a separate-setting run (required when it has several)",
}


def _export(argv: list[str]) -> None:
    options = parse(argv, PROG, KEYS, ("ckpt",))
    from adzoo.export import FORMATS, export_run, parse_formats

    formats = parse_formats(options.get("format", ",".join(FORMATS)))  # before the model is built
    output = Path(options["output"]) if options.get("output") else None
    for fmt, result in export_run(Path(options["ckpt"]), output, formats, options.get("category") or None).items():
        print(f"{fmt}: {result}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``--help`` exits 0, a user mistake exits 2 with one line on stderr."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(token in ("-h", "--help") for token in args):
        print(usage(PROG, KEYS, "Traces the trained method (eval forward: images in [0, 1] → score, map) to "
                    "TorchScript and ONNX; each export is checked against the eager model."))  # fmt: skip
        return 0
    return run_app(lambda: _export(args), PROG)


if __name__ == "__main__":
    sys.exit(main())
