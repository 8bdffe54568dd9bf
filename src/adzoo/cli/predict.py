"""``adzoo-predict ckpt=<run folder or .ckpt> input=<folder> [output=<folder>] [device=cpu] [batch_size=16]
[category=<name>] [threshold=<score>] [pixel_threshold=<score>] [format=text|json]``: decide, per image of a
folder, whether it is anomalous and where, with a trained run.

A mistake (an unknown key, a missing or truncated checkpoint, a run folder whose config names code outside the
allow-list) prints one line, ``adzoo-predict: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from adzoo.errors import ConfigError, run_app

PROG = "adzoo-predict"
KEYS = {
    "ckpt": "run folder, category folder or .ckpt file written by adzoo-train (required)",
    "input": "folder of images, scored recursively (required)",
    "output": "where scores.csv, errors.csv and maps/ go (default: <input name>_predictions)",
    "device": "cpu (default), cuda or cuda:N",
    "batch_size": "images per forward pass, a positive integer (default 16)",
    "category": "which model of a separate-setting run (required when it has several)",
    "threshold": "image threshold in raw score units, overriding the one the run fitted on its validation split",
    "pixel_threshold": "pixel threshold (raw map units) for the defect masks, overriding the run's",
    "format": "text (default: a one-line summary) or json (the summary and every image's decision on stdout)",
}
FORMATS = ("text", "json")
REQUIRED = ("ckpt", "input")


def usage(prog: str, keys: dict[str, str], summary: str) -> str:
    """``--help`` text: the keys and what each means."""
    width = max(len(k) for k in keys) + 1
    lines = [f"usage: {prog} " + " ".join(f"{k}=..." for k in keys), "", summary, "", "keys:"]
    lines += [f"  {k + '=':<{width}}  {text}" for k, text in keys.items()]
    return "\n".join(lines)


def parse(
    argv: list[str], prog: str = PROG, keys: dict[str, str] = KEYS, required: tuple[str, ...] = REQUIRED
) -> dict[str, str]:
    """``key=value`` tokens as a dict; a malformed token, an unknown or a missing key is a :class:`ConfigError`."""
    options: dict[str, str] = {}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {token!r} (keys: {', '.join(keys)}; see {prog} --help)")
        if key not in keys:
            raise ConfigError(f"unknown key {key!r} (keys: {', '.join(keys)}; see {prog} --help)")
        options[key] = value
    for key in required:
        if not options.get(key):
            raise ConfigError(f"{key}= is required (see {prog} --help)")
    return options


def positive_int(options: dict[str, str], key: str, default: int) -> int:
    value = options.get(key, str(default))
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{key}={value}: expected a positive integer")
    return number


class _StderrHandler(logging.Handler):
    """Warnings as ``<prog>: warning: ...`` on whatever sys.stderr is when they happen (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def show_warnings(logger_name: str, prog: str) -> None:
    """Each skipped file is named on stderr, one line each, also when nothing configured logging."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler(logging.WARNING)
        handler.setFormatter(logging.Formatter(f"{prog}: warning: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _predict(argv: list[str]) -> None:
    options = parse(argv)
    batch_size = positive_int(options, "batch_size", 16)
    from adzoo.predict import predict_folder

    show_warnings("adzoo.predict", PROG)
    output_format = options.get("format", "text")
    if output_format not in FORMATS:
        raise ConfigError(f"format={output_format}: expected one of {', '.join(FORMATS)}")
    input_dir = Path(options["input"])
    output = Path(options.get("output") or f"{input_dir.absolute().name}_predictions")
    result = predict_folder(
        Path(options["ckpt"]), input_dir, output, batch_size=batch_size, device=options.get("device", "cpu"),
        category=options.get("category") or None, threshold=options.get("threshold"),
        pixel_threshold=options.get("pixel_threshold"),
    )  # fmt: skip
    if output_format == "json":
        print(json.dumps({"summary": result.summary, "images": result.rows, "errors": result.errors}, indent=2))
        return
    unreadable = f", {len(result.errors)} unreadable (listed in {output / 'errors.csv'})" if result.errors else ""
    summary = result.summary
    if summary.get("decision", True) is None:
        decided = "no threshold (the run has none; pass threshold=)"
    else:
        pixel = summary.get("pixel_threshold")
        masks = f", masks in {output / 'masks'} (pixel threshold {pixel:.6g})" if pixel is not None else ""
        decided = (f"{summary['flagged']} flagged as anomalous at image threshold {summary['image_threshold']:.6g} "
                   f"({summary['strategy']}){masks}")  # fmt: skip
    print(f"scored {len(result.rows)} images{unreadable}: {decided} → {output / 'scores.csv'}, maps in "
          f"{output / 'maps'}, summary {output / 'summary.json'}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``--help`` exits 0, a user mistake exits 2 with one line on stderr."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(token in ("-h", "--help") for token in args):
        print(usage(PROG, KEYS, "Decides, for every image under input/ (recursively), whether it is anomalous, at "
                    "the threshold the run fitted on its validation split (never on test images), and writes "
                    "output/scores.csv (raw and normalised score, is_anomalous), output/masks/<relative path>.png "
                    "(binary defect mask), output/maps/<relative path>.png (image with the mask outline | map "
                    "overlay), output/summary.json (how many flagged, thresholds used) and output/errors.csv "
                    "(unreadable images, which are skipped; the rest are scored)."))  # fmt: skip
        return 0
    return run_app(lambda: _predict(args), PROG)


if __name__ == "__main__":
    sys.exit(main())
