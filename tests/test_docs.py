"""The documentation builds with ``mkdocs build --strict``, and a broken link fails that build.

The site is assembled from the READMEs and the docstrings at build time, so a renamed heading, a moved file or a
bad docstring breaks it silently unless the strict build runs; .ci/run runs it too (``make docs``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("uniad", "adtr", "cap", "transformaly", "patchknn")
pytestmark = pytest.mark.integration


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def first_heading(path: Path) -> str:
    return next(line[2:].strip() for line in path.read_text().splitlines() if line.startswith("# "))


@pytest.mark.slow  # about 25 s (the notebooks execute); .ci/run's `make docs` builds the same site
def test_the_site_builds_strictly_with_the_method_readmes_and_the_api(tmp_path: Path, cache_dir: Path) -> None:
    built = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    for method in METHODS:
        page = (tmp_path / "site" / "methods" / method / "index.html").read_text()
        heading = first_heading(ROOT / "src" / "adzoo" / "models" / method / "README.md")
        assert heading.replace("—", "&mdash;") in page or heading in page, f"{method}: {heading!r} not on its page"
    metrics = (tmp_path / "site" / "api" / "metrics" / "index.html").read_text()
    assert 'id="adzoo.metrics.image_metrics"' in metrics
    notebook = (tmp_path / "site" / "notebooks" / "01_quickstart" / "index.html").read_text()
    assert "I-AUROC" in notebook  # executed: the table the run printed is on the page


def test_a_link_to_a_missing_page_fails_the_strict_build(tmp_path: Path) -> None:
    """A copy of the real config and pages, with one page linking to a page that does not exist."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, symlinks=True, ignore=shutil.ignore_patterns("notebooks"))
    (docs / "index.md").write_text("# Home\n")  # the real one includes ../README.md, outside the copy
    (docs / "fine.md").write_text("# Fine\n\nSee [the getting-started page](index.md).\n")
    config.pop("watch", None)  # relative to the real config's folder
    config |= {"docs_dir": str(docs), "hooks": [str(docs / "hooks.py")], "nav": ["index.md", "fine.md"]}
    config["plugins"] = [p for p in config["plugins"] if not (isinstance(p, dict) and "mkdocs-jupyter" in p)]
    config["exclude_docs"] = "hooks.py\napi/\nmethods/\nguide/\n"
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    assert mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "ok").returncode == 0  # the copy itself builds
    (docs / "broken.md").write_text("# Broken\n\nSee [the missing page](no-such-page.md).\n")
    broken = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert broken.returncode != 0
    assert "no-such-page.md" in broken.stderr
