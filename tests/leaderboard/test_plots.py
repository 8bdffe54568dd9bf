"""The leaderboard's figures as a reviewer reads them: legends off the bars, a chance line, plain time ticks,
labels inside the frame, an AUC legend on every ROC panel, and a captioned gallery of one size."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from PIL import Image

from adzoo.leaderboard import aggregate, collect
from adzoo.leaderboard.collect import Row
from adzoo.leaderboard.plots import (
    _time_ticks,
    bars_figure,
    examples_of,
    gallery,
    roc_figure,
    short_labels,
    time_figure,
    time_text,
)
from tests.leaderboard.conftest import results_payload, write_run


def _rows(tmp_path: Path, methods: list[str], fit: list[float], scores: list[float]) -> list[Row]:
    folders = []
    for method, fit_s, score in zip(methods, fit, scores, strict=True):
        payload = results_payload(tmp_path / method, fit_s=fit_s, scores={"fabric": score, "pill": score - 0.02})
        payload["method"] = payload["config"]["method_name"] = method
        folders.append(write_run(tmp_path / method, payload))
    return aggregate(collect(folders))


def _inside(inner, outer, slack: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - slack and inner.x1 <= outer.x1 + slack and inner.y0 >= outer.y0 - slack
            and inner.y1 <= outer.y1 + slack)  # fmt: skip


def test_bar_legend_sits_off_the_axes_and_auroc_bars_get_a_chance_line(tmp_path: Path) -> None:
    rows = _rows(tmp_path, ["patchknn", "cap", "uniad"], [1.0, 2.0, 3.0], [0.9, 0.8, 0.7])
    for metric, chance in [("image_auroc", True), ("pixel_aupro", False)]:
        fig = bars_figure(rows, metric)
        fig.canvas.draw()
        [ax] = fig.axes
        assert ax.get_legend() is None and len(fig.legends) == 1
        legend = fig.legends[0].get_window_extent()
        assert legend.y1 <= ax.get_window_extent().y0  # wholly below the axes, so no bar is covered
        lines = [line for line in ax.get_lines() if list(line.get_ydata()) == [50, 50]]
        assert bool(lines) == chance
        assert "_" not in ax.get_title() and "per category" in ax.get_title()
        plt.close(fig)


def test_time_ticks_read_aloud() -> None:
    assert [time_text(t) for t in (0.5, 10, 60, 120, 5400)] == ["0.5 s", "10 s", "1 min", "2 min", "1.5 h"]
    low, high, ticks = _time_ticks(40.0, 70.0)
    assert len(ticks) >= 2 and low <= min(ticks) and max(ticks) <= high
    assert all(time_text(t) in {"30 s", "1 min", "2 min"} for t in ticks)


def test_time_labels_stay_in_the_frame_and_do_not_overlap(tmp_path: Path) -> None:
    """Two rows with nearly the same time and accuracy (a real demo had adtr and uniad on top of each other), and
    one at the right edge."""
    rows = _rows(tmp_path, ["adtr", "uniad", "patchknn", "transformaly"], [28.0, 29.0, 3.0, 400.0],
                 [0.625, 0.624, 0.82, 0.59])  # fmt: skip
    fig = time_figure(rows)
    fig.canvas.draw()
    [ax] = fig.axes
    frame = ax.get_window_extent()
    boxes = [text.get_window_extent() for text in ax.texts]
    assert len(boxes) == 4 and all(_inside(box, frame) for box in boxes)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    points = [ax.transData.transform(text.xy) for text in ax.texts]
    for n, box in enumerate(boxes):  # nor does a label cover another row's point
        assert not any(box.contains(x, y) for m, (x, y) in enumerate(points) if m != n)
    assert all("×" not in label.get_text() and "10^" not in label.get_text() for label in ax.get_xticklabels())
    assert {label.get_text() for label in ax.get_xticklabels()} >= {"1 min"}
    plt.close(fig)


def test_short_labels_name_only_what_differs(tmp_path: Path) -> None:
    rows = _rows(tmp_path, ["patchknn", "cap"], [1.0, 2.0], [0.9, 0.8])
    assert sorted(short_labels(rows)) == ["cap", "patchknn"]


def test_every_roc_panel_has_its_own_legend_with_the_auc(runs_dir: Path) -> None:
    rows = aggregate(collect([runs_dir]))
    fig = roc_figure(rows)
    assert fig is not None
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["fabric", "pill"]
    for ax in panels:
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(texts) == len(rows) + 1 and all("AUC" in t for t in texts) and texts[-1] == "chance: AUC 50"
        assert ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0  # under the panel
    plt.close(fig)


def test_gallery_grids_are_captioned_and_one_size(runs_dir: Path, tmp_path: Path) -> None:
    rows = aggregate(collect([runs_dir]))
    examples = examples_of(runs_dir / "s0")
    index = json.loads((runs_dir / "s0" / "examples" / "examples.json").read_text())
    assert len(examples) == len(index) > 0
    for example, record in zip(sorted(examples, key=lambda e: e.file.name), sorted(index, key=lambda r: r["file"]),
                               strict=True):  # fmt: skip
        assert example.caption.startswith(f"{record['category']} · {record['defect']} · score ")
    assert {e.label for e in examples} == {0, 1}  # normal images show beside the defects
    separate = examples_of(runs_dir / "sep")  # one model per category: its panels are under categories/<c>/
    assert {e.category for e in separate} == {"fabric", "pill"} and all(e.score is not None for e in separate)
    grids = gallery(rows, tmp_path)
    assert len(grids) == len(rows) == 2
    sizes = {Image.open(path).size for paths in grids.values() for path in paths}
    assert len(sizes) == 1  # every row's grid has one size, whatever wrote its panels


def test_a_run_without_an_example_index_is_captioned_from_its_masks(runs_dir: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(runs_dir / "s0", folder)
    (folder / "examples" / "examples.json").unlink()
    examples = examples_of(folder)
    assert examples and all(e.score is None and e.defect is None for e in examples)
    assert {e.caption.split(" · ")[1] for e in examples} <= {"good", "anomalous"}
    assert any(e.label == 1 for e in examples)


@pytest.mark.parametrize("remote", ["git@github.com:adzoo/adzoo.git", "https://github.com/adzoo/adzoo.git"])
def test_commit_links_need_a_web_remote(remote: str) -> None:
    from adzoo.leaderboard.render import commit_url

    commit = "c4fcbe3516dc5a6a77f3ce88f4906ffb3309588f"
    assert commit_url(remote, commit) == f"https://github.com/adzoo/adzoo/commit/{commit}"
    assert commit_url("/srv/git/adzoo", commit) is None
    assert commit_url(remote, "not-a-commit") is None
