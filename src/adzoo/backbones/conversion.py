"""What every weight converter needs: the timm layout to convert onto, and a disk memo of the result.

Both the packaged-weight registry (``weights``) and the ONNX converter (``onnx_vit``) use these; they live here so
the registry imports the converter and nothing imports back (tests/test_layering.py checks the direction).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

from adzoo.backbones._io import atomic_torch_save, default_cache_dir, tensors_digest

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def timm_template(name: str, **kwargs: object) -> nn.Module:
    """The full timm model on the meta device: its keys and shapes, at no memory or init cost."""
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kwargs)


def cached_conversion(tag: str, build: Callable[[], StateDict], cache_dir: Path | None = None) -> StateDict:
    """Return ``build()``, memoised on disk under ``<cache>/weights/<tag>.pt``.

    Put a version in ``tag`` (package version, converter version): a changed source must not reuse an old
    conversion. A file that fails to load or fails its checksum is rebuilt, never used.
    """
    path = (cache_dir or default_cache_dir()) / "weights" / f"{tag}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            keys, tensors = list(blob["keys"]), list(blob["tensors"])
            if len(keys) == len(tensors) and blob["digest"] == tensors_digest(tensors):
                return dict(zip(keys, tensors))
            log.warning("Converted weights %s failed their checksum; rebuilding.", path)
        except Exception as exc:  # any unreadable file is rebuilt
            log.warning("Could not read converted weights %s (%s); rebuilding.", path, exc)
    state = build()
    tensors = [t.contiguous() for t in state.values()]
    atomic_torch_save({"keys": list(state), "tensors": tensors, "digest": tensors_digest(tensors)}, path)
    return state
