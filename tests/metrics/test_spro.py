"""sPRO and AU-sPRO (MVTec LOCO AD's localisation metric): by hand on tiny maps, exact against a brute-force
reference written here, the thresholded approximation within its stated bound, and defects_config.json's rules."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adzoo.metrics.spro import DefectType, au_spro, parse_defects_config, resize_channels, spro_curve

RELATIVE = DefectType("missing_item", 255, 0.5, relative=True)
ABSOLUTE = DefectType("extra_item", 100, 3.0, relative=False)


def _hand_case() -> tuple[list[np.ndarray], list[list[tuple[np.ndarray, float]]]]:
    """Image A (4x4) holds two defects: a relative one (row 0, area 4, saturates at int(0.5 * 4) = 2 pixels) and an
    absolute one (rows 2-3, columns 0-2, area 6, saturates at min(3, 6) = 3). Image B is good: 16 negatives.
    Negatives: A's row 1 and column 3 of rows 2-3 (6) plus B's 16 = 22."""
    a = np.array(
        [
            [0.9, 0.2, 0.2, 0.2],
            [0.6, 0.1, 0.1, 0.1],
            [0.8, 0.8, 0.8, 0.1],
            [0.8, 0.3, 0.3, 0.1],
        ]
    )
    b = np.zeros((4, 4))
    b[0, 0] = b[3, 3] = 0.7
    first = np.zeros((4, 4), dtype=bool)
    first[0] = True
    second = np.zeros((4, 4), dtype=bool)
    second[2:, :3] = True
    channels = [
        [(first, RELATIVE.saturation_area(int(first.sum()))), (second, ABSOLUTE.saturation_area(int(second.sum())))],
        [],  # the good image: only false positives
    ]
    return [a, b], channels


def test_spro_by_hand_relative_and_absolute_saturation_two_defects_and_a_good_image() -> None:
    maps, channels = _hand_case()
    assert [sat for _, sat in channels[0]] == [2.0, 3.0]
    fpr, spro = spro_curve(maps, channels, [0.9, 0.85, 0.75, 0.5, 0.0, -1.0])
    # 0.9: nothing is above it (strictly greater is anomalous)
    # 0.85: the relative defect has 1 of its 2 saturating pixels (0.5), the absolute one none: mean 0.25
    # 0.75: the absolute defect has 4 TP pixels, capped at its 3: sPRO 1, mean 0.75; no negative above 0.75
    # 0.5: A's 0.6 and B's two 0.7 are false positives: 3 of 22
    # 0.0: both defects are saturated; A's row 1 (0.6, 0.1 x 3) and column 3 (0.1 x 2) plus B's two 0.7: 8 of 22
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.0, 3 / 22, 8 / 22, 1.0])
    np.testing.assert_allclose(spro, [0.0, 0.25, 0.75, 0.75, 1.0, 1.0])
    # The good image adds negatives only: without it the FPR is over A's 6 negatives, the sPRO unchanged.
    fpr_a, spro_a = spro_curve(maps[:1], channels[:1], [0.5, 0.0])
    np.testing.assert_allclose(fpr_a, [1 / 6, 6 / 6])
    np.testing.assert_allclose(spro_a, [0.75, 1.0])


def test_au_spro_by_hand() -> None:
    maps, channels = _hand_case()
    # The exact curve, one point per distinct score (thresholds +inf, 0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.0, -inf):
    # (0,0) (0,0) (0,.25) (0,.75) (2/22,.75) (3/22,.75) (3/22,.75) (3/22,1) (8/22,1) (1,1)
    exact = {limit: au_spro(maps, channels, limit, num_thresholds=None) for limit in (0.1, 0.25, 1.0)}
    assert exact[0.1] == pytest.approx(0.75)  # flat at 0.75 up to FPR 3/22 > 0.1
    assert exact[0.25] == pytest.approx((3 / 22 * 0.75 + (0.25 - 3 / 22) * 1.0) / 0.25)
    assert exact[1.0] == pytest.approx((3 / 22 * 0.75 + 19 / 22 * 1.0) / 1.0)
    for limit, value in exact.items():
        assert value == pytest.approx(_brute_au_spro(maps, channels, limit), abs=1e-12)


def saturation_cases() -> list[tuple[DefectType, int, float, float]]:
    return [
        (RELATIVE, 5, 1.0, 2.0),  # int(0.5 * 5)
        (DefectType("d", 1, 0.1, True), 5, 1.0, 1.0),  # int(0.5) is 0: at least one pixel, never a division by 0
        (DefectType("d", 1, 1.0, True), 7, 0.01, 7.0),  # relative: area_scale does not apply
        (ABSOLUTE, 6, 1.0, 3.0),
        (ABSOLUTE, 2, 1.0, 2.0),  # capped at the defect's area
        (DefectType("d", 1, 1000.0, False), 100, 0.05, 50.0),  # 1000 px at full size are 50 px at 1/20 the pixels
        (DefectType("d", 1, 10.0, False), 100, 0.01, 1.0),  # 0.1 px: at least one pixel
    ]


@pytest.mark.parametrize(("defect", "area", "scale", "expected"), saturation_cases())
def test_saturation_area(defect: DefectType, area: int, scale: float, expected: float) -> None:
    assert defect.saturation_area(area, scale) == expected


def test_saturation_area_of_an_empty_defect_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one pixel"):
        RELATIVE.saturation_area(0)


def _brute_au_spro(maps: list[np.ndarray], channels: list[list[tuple[np.ndarray, float]]], max_fpr: float) -> float:
    """The definition, literally: one point per distinct score (and +-inf), TP per channel, FP outside the union of
    an image's channels, then the trapezoid up to ``max_fpr`` with the last segment interpolated."""
    scores = np.unique(np.concatenate([m.ravel() for m in maps]))
    negatives = 0
    for amap, image_channels in zip(maps, channels, strict=True):
        union = np.zeros(amap.shape, dtype=bool)
        for mask, _ in image_channels:
            union |= mask
        negatives += int((~union).sum())
    points = []
    for t in [np.inf, *scores[::-1], -np.inf]:
        fp, spros = 0, []
        for amap, image_channels in zip(maps, channels, strict=True):
            predicted = amap > t
            union = np.zeros(amap.shape, dtype=bool)
            for mask, saturation in image_channels:
                union |= mask
                spros.append(min(int((predicted & mask).sum()) / saturation, 1.0))
            fp += int((predicted & ~union).sum())
        points.append((fp / negatives, float(np.mean(spros))))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= max_fpr:
            break
        if x1 <= max_fpr:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            area += (max_fpr - x0) * (y0 + y) / 2
    return area / max_fpr


def _random_case(seed: int, size: tuple[int, int], levels: int | None) -> tuple[list, list]:
    """A few images with 0-3 rectangular defects each (they may overlap), one good image; ``levels`` quantises the
    scores so that thresholds tie."""
    rng = np.random.default_rng(seed)
    types = [RELATIVE, ABSOLUTE, DefectType("small", 7, 0.2, True), DefectType("big", 9, 40.0, False)]
    maps, channels = [], []
    for i in range(5):
        amap = rng.random(size)
        image_channels = []
        for _ in range(0 if i == 0 else int(rng.integers(1, 4))):
            r, c = int(rng.integers(0, size[0] - 3)), int(rng.integers(0, size[1] - 3))
            mask = np.zeros(size, dtype=bool)
            mask[r : r + int(rng.integers(2, 8)), c : c + int(rng.integers(2, 8))] = True
            amap[mask] += rng.random() * 0.6
            defect = types[int(rng.integers(len(types)))]
            image_channels.append((mask, defect.saturation_area(int(mask.sum()))))
        maps.append(np.round(amap * levels) / levels if levels else amap)
        channels.append(image_channels)
    return maps, channels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_fpr", [0.01, 0.05, 0.3, 1.0])
def test_exact_au_spro_equals_the_brute_force_definition(seed: int, max_fpr: float) -> None:
    maps, channels = _random_case(seed, (12, 10), levels=25)  # ties among scores, and between defects and negatives
    assert au_spro(maps, channels, max_fpr, num_thresholds=None) == pytest.approx(
        _brute_au_spro(maps, channels, max_fpr), abs=1e-12
    )


@pytest.mark.parametrize("num_thresholds", [20, 200, 1000])
@pytest.mark.parametrize("max_fpr", [0.05, 0.3])
def test_thresholded_au_spro_is_within_its_bound_of_the_exact_one(num_thresholds: int, max_fpr: float) -> None:
    """The thresholds let the FPR step evenly by at most max_fpr / (K - 1) + 1/n; between two curve points the
    exact curve is monotone, so each chord errs by at most half of (FPR step x sPRO step), and the sPRO steps add
    up to at most 1: the normalised error is at most 1 / (2 (K - 1)) + 1 / (2 n max_fpr) (continuous scores)."""
    maps, channels = _random_case(3, (48, 40), levels=None)
    negatives = sum(m.size for m in maps) - sum(
        int(np.logical_or.reduce([c for c, _ in ch]).sum()) for ch in channels if ch
    )
    exact = au_spro(maps, channels, max_fpr, num_thresholds=None)
    approx = au_spro(maps, channels, max_fpr, num_thresholds=num_thresholds)
    bound = 1 / (2 * (num_thresholds - 1)) + 1 / (2 * negatives * max_fpr)
    assert abs(approx - exact) <= bound
    assert 0.0 < exact < 1.0


def test_resize_channels_matches_the_mask_reader_and_scales_absolute_thresholds() -> None:
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 12:48] = True  # 20 x 36 = 720 px
    speck = np.zeros((40, 60), dtype=bool)
    speck[1, 1] = True  # no pixel of it survives a 4x nearest downscale
    out = resize_channels([(mask, DefectType("d", 1, 360.0, False)), (speck, RELATIVE)], (10, 15))
    assert len(out) == 1  # the speck is left out
    small, saturation = out[0]
    expected = F.interpolate(torch.from_numpy(mask).float()[None, None], size=(10, 15), mode="nearest")[0, 0] > 0.5
    assert np.array_equal(small, expected.numpy())  # exactly what read_mask does to the datamodule's masks
    assert saturation == pytest.approx(360.0 * (10 * 15) / (40 * 60))  # 22.5 of the 45 resized pixels


def test_au_spro_argument_errors() -> None:
    maps, channels = _hand_case()
    with pytest.raises(ValueError, match="max_fpr"):
        au_spro(maps, channels, max_fpr=0.0)
    with pytest.raises(ValueError, match="num_thresholds"):
        au_spro(maps, channels, num_thresholds=1)
    with pytest.raises(ValueError, match="2 anomaly maps but 1"):
        au_spro(maps, channels[:1])
    with pytest.raises(ValueError, match="at least one defect channel"):
        au_spro(maps[1:], channels[1:])
    with pytest.raises(ValueError, match=r"image 0, channel 0: mask \(4, 4\) but anomaly map \(2, 2\)"):
        au_spro([maps[0][:2, :2]], channels[:1])
    with pytest.raises(ValueError, match="non-empty defect"):
        au_spro(maps, [[(np.zeros((4, 4), dtype=bool), 1.0)], []])


def _entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "defect_name": "missing_banana", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": True,
    }  # fmt: skip
    entry.update(changes)
    return entry


def test_parse_defects_config() -> None:
    absolute = _entry(defect_name="extra_item", pixel_value=254, saturation_threshold=2600, relative_saturation=False)
    parsed = parse_defects_config([_entry(), absolute], "box/defects_config.json")
    assert parsed == {
        255: DefectType("missing_banana", 255, 1.0, True),
        254: DefectType("extra_item", 254, 2600.0, False),
    }


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"defect_name": "x"}, "expected a non-empty JSON list"),
        ([], "expected a non-empty JSON list"),
        ([1], "entry 0 is 1; expected an object with the keys"),
        ([{k: v for k, v in _entry().items() if k != "relative_saturation"}], "entry 0 is .* expected an object"),
        ([_entry(pixel_value=0)], "entry 0: pixel_value 0, expected an integer in 1..255"),
        ([_entry(pixel_value=256)], "entry 0: pixel_value 256, expected an integer in 1..255"),
        ([_entry(pixel_value=5.0)], "entry 0: pixel_value 5.0, expected an integer"),
        ([_entry(pixel_value=True)], "entry 0: pixel_value True, expected an integer"),
        ([_entry(), _entry(defect_name="other")], "entry 1: pixel_value 255 is used by 'missing_banana' already"),
        ([_entry(relative_saturation="yes")], "entry 0: relative_saturation 'yes', expected true or false"),
        ([_entry(saturation_threshold=1)], r"entry 0: relative saturation_threshold 1, expected a float in \(0, 1\]"),
        ([_entry(saturation_threshold=0.0)], "entry 0: relative saturation_threshold 0.0"),
        ([_entry(saturation_threshold=1.5)], "entry 0: relative saturation_threshold 1.5"),
        (
            [_entry(saturation_threshold=2.5, relative_saturation=False)],
            "entry 0: absolute saturation_threshold 2.5, expected an integer >= 0",
        ),
        ([_entry(saturation_threshold=-1, relative_saturation=False)], "entry 0: absolute saturation_threshold -1"),
        ([_entry(saturation_threshold=True, relative_saturation=False)], "entry 0: absolute saturation_threshold True"),
    ],
)
def test_defects_config_rules_name_the_file_and_entry(entries: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape("cat/defects_config.json: ") + message):
        parse_defects_config(entries, "cat/defects_config.json")
