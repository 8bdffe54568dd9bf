"""One name table: headers, titles and per-category headings never show a raw metric key."""

from __future__ import annotations

from adzoo.leaderboard import names
from adzoo.leaderboard.collect import METRICS
from adzoo.leaderboard.render import MAIN_METRICS


def test_every_leaderboard_metric_has_a_header_and_a_human_title() -> None:
    for metric in METRICS:
        assert names.header(metric) != metric and names.title(metric) != metric, metric
        assert "_" not in names.title(metric) and "_" not in names.per_category(metric), metric
    assert [header for _, header in MAIN_METRICS][:4] == ["I-AUROC", "I-AUROC (pool)", "P-AUROC", "AUPRO"]


def test_a_qualifier_goes_after_per_category_and_an_unknown_key_reads_as_itself() -> None:
    assert names.per_category("pixel_aupro") == "AUPRO per category (FPR ≤ 30 %)"
    assert names.per_category("image_auroc") == "Image AUROC per category"
    assert names.header("my_metric") == names.title("my_metric") == "my_metric"
    assert {"image_auroc", "image_auroc_avgpool", "pixel_auroc"} == names.CHANCE_50
