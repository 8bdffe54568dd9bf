"""What a reader sees: seeds as a count and a list, variants by what they change, a legend, the papers apart."""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

from adzoo.leaderboard import aggregate, collect
from adzoo.leaderboard.collect import DEFAULT_VARIANT, VARIANT_KEYS_SHOWN, Row, describe_variant
from adzoo.leaderboard.render import (
    COLUMN_LEGEND,
    PAPER_COLUMN,
    PAPER_NUMBERS,
    _html_cell,
    compact_table,
    main_table,
    provenance,
    split_shared,
    to_csv,
    to_html,
    to_markdown,
)
from tests.leaderboard.conftest import results_payload, write_run


def _write(folder: Path, seed: int = 0, k: int = 1, method: str = "patchknn", **kw: Any) -> Path:
    payload = results_payload(folder, seed=seed, **kw)
    payload["config"]["model"]["k"] = k
    payload["method"] = payload["config"]["method_name"] = method
    return write_run(folder, payload)


def _column(rows: list[Row], column: str, table: Any = main_table) -> dict[str, str]:
    header, body = table(rows)
    variant = header.index("variant")
    return {f"{line[0]}/{line[variant]}": line[header.index(column)] for line in body}


def _compact(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """compact_table's Markdown back as header and body, to read its columns like main_table's."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in compact_table(rows).splitlines()]
    return lines[0], lines[2:]


def _rows(*folders: Path) -> list[Row]:
    return aggregate(collect(folders))


def test_seeds_cell_gives_the_count_and_the_seeds(tmp_path: Path) -> None:
    one = _rows(_write(tmp_path / "one"))
    two = _rows(_write(tmp_path / "a", seed=0), _write(tmp_path / "b", seed=1))
    assert one[0].seeds_label == "1 (seed 0)" and two[0].seeds_label == "2 (0, 1)"
    for rows, text in ((one, "1 (seed 0)"), (two, "2 (0, 1)")):
        assert list(_column(rows, "seeds").values()) == [text]
        assert f"| {text} |" in compact_table(rows) and f"| {text} |" in to_markdown(rows)
        assert f"<td>{text}</td>" in to_html(rows)
    table = list(csv.DictReader(to_csv(two, ["image_auroc"]).splitlines()))
    assert table[0]["seeds"] == "0 1" and table[0]["n_seeds"] == "2"  # machine-readable


def test_variant_cell_names_what_differs_and_a_lone_variant_is_default(tmp_path: Path) -> None:
    rows = _rows(
        _write(tmp_path / "k1", k=1),
        _write(tmp_path / "k3", k=3),
        _write(tmp_path / "k3s1", k=3, seed=1),
        _write(tmp_path / "other", method="cap"),
    )
    expected = {"patchknn/model.k=1": "model.k=1", "patchknn/model.k=3": "model.k=3", "cap/default": DEFAULT_VARIANT}
    assert _column(rows, "variant") == expected
    assert _column(rows, "variant", _compact) == expected  # the terminal table at the end of a sweep too
    assert _rows(_write(tmp_path / "alone", k=3))[0].variant_label == DEFAULT_VARIANT
    # the CSV keeps the hash rows are keyed on, and the overrides beside it; so does the provenance table
    table = list(csv.DictReader(to_csv(rows, ["image_auroc"]).splitlines()))
    k3 = next(r for r in table if r["variant_overrides"] == "model.k=3")
    assert k3["variant"] == next(r.group.variant for r in rows if r.variant_label == "model.k=3")
    assert len(k3["variant"]) == 8 and k3["n_seeds"] == "2"
    header, body = provenance(rows)
    assert {line[header.index("variant")] for line in body} == {r.group.variant for r in rows}


def test_variant_text_is_short() -> None:
    base = {f"model.key{i}": i for i in range(VARIANT_KEYS_SHOWN + 2)} | {"model.name": "x" * 40}
    other = {k: v + 10 if isinstance(v, int) else "y" for k, v in base.items()}
    text = describe_variant(base, [base, other])
    assert text.startswith("model.key0=0, model.key1=1, model.key2=2") and text.endswith(" +3 more")
    assert describe_variant({"a": "x" * 40}, [{"a": "x" * 40}, {"a": 1}]) == "a=" + "x" * 23 + "…"
    assert describe_variant({"a": 1}, [{"a": 1}, {}]) == "a=1" and describe_variant({}, [{"a": 1}, {}]) == "a=unset"
    assert describe_variant({"a": 1}, [{"a": 1}]) == DEFAULT_VARIANT


def test_legend_explains_every_main_table_column(tmp_path: Path) -> None:
    rows = _rows(_write(tmp_path / "a"), _write(tmp_path / "b", method="uniad"))
    header, _ = main_table(rows)
    assert [h for h in header if h not in COLUMN_LEGEND] == []
    markdown, page = to_markdown(rows), to_html(rows)
    for column in header:
        assert f"- **{column}**: {COLUMN_LEGEND[column]}" in markdown
        assert f"<li><b>{html.escape(column)}</b>: {html.escape(COLUMN_LEGEND[column])}</li>" in page


def test_paper_text_leaves_the_main_table_for_a_note(tmp_path: Path) -> None:
    rows = _rows(_write(tmp_path / "a"), _write(tmp_path / "b", method="uniad"))
    papers = _column(rows, PAPER_COLUMN)
    assert papers == {"patchknn/default": "—", "uniad/default": PAPER_NUMBERS["uniad"]}  # wandb and the CLI: text
    assert _column(rows, PAPER_COLUMN, lambda r: main_table(r, paper_marks=True))["uniad/default"] == "[1]"
    markdown = to_markdown(rows)
    assert f"| uniad | [1] | {PAPER_NUMBERS['uniad']} |" in markdown
    assert PAPER_NUMBERS["uniad"] not in markdown.split("Columns:")[0]  # not in the main table
    page = to_html(rows)
    assert "<div class='scroll'><table>" in page and "<script" not in page and "http" not in page


def test_page_states_shared_identity_columns_once_and_stacks_intervals() -> None:
    header = ["method", "setting", "data", "seeds", "I-AUROC"]
    body = [["a", "unified", "d1", "1 (seed 0)", "74.5 [67.2, 81.0] best"], ["b", "unified", "d2", "1 (seed 0)", "—"]]
    shown, shown_body, shared = split_shared(header, body)
    assert shown == ["method", "data", "seeds", "I-AUROC"]  # seeds is no identity column: it stays
    assert shared == [("setting", "unified")] and shown_body[1] == ["b", "d2", "1 (seed 0)", "—"]
    assert split_shared(header, body[:1]) == (header, body[:1], [])  # one row keeps every column
    assert _html_cell("74.5 [67.2, 81.0] sd 1.2 ≈ best") == (
        "<span title=\"interval [67.2, 81.0], seed sd 1.2\">74.5</span> <span class='mark'>≈ best</span><br>"
        "<span class='ci'>67.2–81.0 sd 1.2</span>"
    )  # the interval stacks under its value as low–high, in full in the tooltip
    assert _html_cell("tf_efficientnet_lite0 (packaged)") == "tf_efficientnet_lite0 (packaged)"


def test_html_main_table_leaves_out_what_every_row_shares(tmp_path: Path) -> None:
    rows = _rows(_write(tmp_path / "a"), _write(tmp_path / "b", method="uniad"))
    page = to_html(rows)
    assert "<p class='shared'>Every row: " in page and "<b>setting</b> unified" in page
    main = page.split("<div class='scroll'>")[1].split("</table>")[0]
    assert "<th>setting</th>" not in main and "<th>method</th>" in main
    assert "| setting |" in to_markdown(rows)  # the Markdown table keeps them all


def test_a_tuned_config_is_tagged_and_cost_columns_show(tmp_path: Path) -> None:
    tuned = {"study": "search_patchknn", "trials": 8, "objective": "val_image_auroc", "best_value": 0.9, "trial": 5}
    _write(tmp_path / "default", k=1)
    _write(tmp_path / "tuned", k=3, tuned=tuned)
    trial = results_payload(tmp_path / "trial", scores={"fabric": 0.99, "pill": 0.99, "screw": 0.99})
    trial["task"] = "search_trial"  # a trial's validation numbers never make a row
    write_run(tmp_path / "trial", trial)
    rows = aggregate(collect([tmp_path]))
    assert len(rows) == 2
    assert sorted(_column(rows, "variant").values()) == ["model.k=1", "model.k=3; tuned on validation (8 trials)"]
    assert set(_column(rows, "GFLOPs/img").values()) == {"0.0058"}
    assert set(_column(rows, "peak GiB").values()) == {"0.90"}
    assert {"GFLOPs/img", "peak GiB"} <= set(COLUMN_LEGEND)
    table = list(csv.DictReader(to_csv(rows, ["image_auroc"]).splitlines()))
    assert {r["gflops_per_image"] for r in table} == {"0.0058"} and {r["peak_memory_gib"] for r in table} == {"0.9"}


def test_provenance_links_the_run_files_relative_to_the_page(tmp_path: Path) -> None:
    import re

    folder = _write(tmp_path / "runs" / "patchknn-synthetic-unified-s0-abc")
    (folder / "predictions.csv").write_text("category,path,label,pred_score,avgpool_score\n")
    page = to_html(_rows(folder), base=tmp_path / "board")
    provenance_part = page.split("<h2>Provenance</h2>")[1]
    hrefs = re.findall(r'href="([^"]+)"', provenance_part)
    assert "../runs/patchknn-synthetic-unified-s0-abc/results.json" in hrefs
    assert "../runs/patchknn-synthetic-unified-s0-abc/predictions.csv" in hrefs
    assert all((tmp_path / "board" / h).resolve().exists() for h in hrefs if not h.startswith("http"))
    assert "-<wbr>" in provenance_part  # the long folder name may wrap at its hyphens, never mid-word
    assert "commit/" not in provenance_part  # no remote in results.json: the commit stays text
