"""mkdocs hooks: links from the included READMEs to their pages, and the notebooks run on tiny settings.

The README and the method READMEs link to each other by repository path (``src/adzoo/models/cap/README.md``);
included into a page, such a link would leave the site, so it is pointed at the page that includes that file
(the include plugin has already made it relative to the including page). Any other link is left to mkdocs,
which fails the strict build on a missing target.

The notebooks execute at build time on the suite's tiny settings, into a throwaway log folder.

Tiny, because the pages show that the notebooks run and what they print, not benchmark numbers (those are in
the README and the method pages); a throwaway ``ADZOO_LOG_DIR``, because notebook 02 reads an existing
``logs/sweeps/demo`` when it finds one, and the pages must not depend on what a checkout has run before.
``ADZOO_NOTEBOOK_OVERRIDES`` set in the environment (even empty: the real defaults) wins over the tiny settings.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: repository file -> the page that includes it
INCLUDED = {
    ROOT / "README.md": DOCS / "index.md",
    **{ROOT / "src/adzoo/models" / name / "README.md": DOCS / "methods" / f"{name}.md"
       for name in ("uniad", "adtr", "cap", "transformaly", "patchknn")},
}  # fmt: skip
_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
_log_dirs: list[str] = []


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    here = Path(page.file.abs_src_path).resolve().parent

    def retarget(match: re.Match) -> str:
        target = match[2]
        if "://" in target or target.startswith(("/", "mailto:")):
            return match[0]
        page_of = INCLUDED.get(Path(os.path.normpath(here / target)))
        if page_of is None:
            return match[0]
        return f"{match[1]}{os.path.relpath(page_of, here)}{match[3] or ''}{match[4]}"

    return _LINK.sub(retarget, markdown)


def _tiny_overrides() -> str:
    """The overrides tests/test_notebooks.py runs the notebooks with, from their one definition."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.conftest import TINY_DATA

    return " ".join(["backbone=test_efficientnet", *TINY_DATA])


def on_config(config: Any) -> Any:
    os.environ.setdefault("ADZOO_NOTEBOOK_OVERRIDES", _tiny_overrides())
    log_dir = tempfile.mkdtemp(prefix="adzoo-docs-")
    _log_dirs.append(log_dir)
    os.environ["ADZOO_LOG_DIR"] = log_dir  # the kernels start from this process and inherit it
    return config


def on_post_build(config: Any) -> None:
    while _log_dirs:
        shutil.rmtree(_log_dirs.pop(), ignore_errors=True)


def on_build_error(error: Exception) -> None:
    on_post_build(None)
