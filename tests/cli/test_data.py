"""``adzoo-data``: what a loader found, per category and split, and the loader's own error for a bad tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from adzoo.cli.data import main
from tests.conftest import TINY_DATA


def test_it_prints_counts_and_masks_then_checks_every_file(cache_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([f"paths.cache_dir={cache_dir}", *TINY_DATA, "data.categories=[fabric,pill]"]) == 0
    out = capsys.readouterr().out
    assert "MVTecLayoutSource at " in out and ": 2 categories" in out
    assert "  fabric: train 6, test 6 (good 2; hole 1, masks 1/1;" in out
    assert out.rstrip().endswith("every image and mask read as expected")


def test_a_bad_tree_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "thing" / "train" / "good").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["data=mvtec", f"data.root={tmp_path}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adzoo-data: error: missing folder") and "test" in err and len(err.splitlines()) == 1
