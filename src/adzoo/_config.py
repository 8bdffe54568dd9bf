"""Where the Hydra configs live.

``conf/`` stays at the repository top level. It is found, in order: ``$ADZOO_CONFIG_DIR``; the repo's
``conf/`` next to ``src/`` (editable installs, clones); the copy packaged into the wheel as
``adzoo/conf`` (hatch force-include). Everything resolves to an absolute path for ``hydra.main``.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> str:
    candidates = []
    if os.environ.get("ADZOO_CONFIG_DIR"):
        candidates.append(Path(os.environ["ADZOO_CONFIG_DIR"]))
    candidates += [_PACKAGE_DIR.parent.parent / "conf", _PACKAGE_DIR / "conf"]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return str(candidate.resolve())
    raise FileNotFoundError(
        "adzoo configs not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + " (set ADZOO_CONFIG_DIR to the repo's conf/ folder)"
    )


def epoch_fraction(max_epochs: int, fraction: float) -> int:
    """``${adzoo_epochs:${trainer.max_epochs},0.8}``: the epoch at which e.g. a StepLR fires (at least 1)."""
    return max(1, int(int(max_epochs) * float(fraction)))


def cpu_feature_stride(image_size: int) -> int:
    """``${adzoo_cpu_stride:${data.image_size}}``: the CPU profiles' token stride, 16 per 128 px (at least 16).

    Why: a CPU step costs about the square of the token count, and 8x8 tokens is what the 10-minute budget
    holds. So 128² keeps the papers' stride 16 (8x8), 256² gets stride 32 (8x8 again, from an image with
    twice the detail), and sizes between keep stride 16 (224² gives the papers' 14x14). Issue 13 measured
    256² at stride 32 against 128² at stride 16 (src/adzoo/models/uniad/README.md).
    """
    return 16 * max(1, int(image_size) // 128)


def register_resolvers() -> None:
    from adzoo.run_identity import eval_folder_name, run_folder_name

    if not OmegaConf.has_resolver("adzoo_run_name"):
        OmegaConf.register_new_resolver("adzoo_run_name", run_folder_name)
    if not OmegaConf.has_resolver("adzoo_eval_name"):
        OmegaConf.register_new_resolver("adzoo_eval_name", eval_folder_name)
    if not OmegaConf.has_resolver("adzoo_epochs"):
        OmegaConf.register_new_resolver("adzoo_epochs", epoch_fraction)
    if not OmegaConf.has_resolver("adzoo_cpu_stride"):
        OmegaConf.register_new_resolver("adzoo_cpu_stride", cpu_feature_stride)


register_resolvers()
