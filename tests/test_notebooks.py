"""The notebooks execute top to bottom on tiny settings, so they never rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import TINY_DATA

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADZOO_NOTEBOOK_OVERRIDES", " ".join(["backbone=test_efficientnet", *TINY_DATA]))
    monkeypatch.setenv("ADZOO_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("ADZOO_CACHE_DIR", str(cache_dir))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    assert any((tmp_path / "logs" / "notebooks").iterdir())
