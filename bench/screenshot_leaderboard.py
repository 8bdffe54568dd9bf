"""Screenshot a leaderboard.html in headless Chromium and say whether its tables fit the window.

    python bench/screenshot_leaderboard.py logs/sweeps/demo/leaderboard.html [--widths 1400 1366] [--out DIR]

For each width it saves ``DIR/leaderboard_<width>.png`` (the first screen, ``--height`` px tall) and measures
every table in a copy of the page with a small script added (the page itself has none): the table's width
against the width it has, and whether the page as a whole scrolls sideways. The main table is the first one.
Chromium is not a dependency of adzoo: install it yourself (``apt-get install chromium``) or name the binary with
``--chromium`` / ``$CHROMIUM``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "chromium-headless-shell", "chrome-headless-shell", "google-chrome",
              "google-chrome-stable")  # fmt: skip
MEASURE = """<script>
(function () {
  var out = {viewport: window.innerWidth, page: document.documentElement.scrollWidth, tables: []};
  document.querySelectorAll("table").forEach(function (t) {
    var box = t.parentElement, title = "", el = box;
    while (el && !title) {  // the nearest heading before the table names it
      el = el.previousElementSibling;
      if (el && /^H[1-6]$/.test(el.tagName)) title = el.textContent;
    }
    out.tables.push({title: title, width: Math.round(t.getBoundingClientRect().width), room: box.clientWidth,
                     columns: t.rows.length ? t.rows[0].cells.length : 0,
                     box: /auto|scroll/.test(getComputedStyle(box).overflowX)});
  });
  var pre = document.createElement("pre");
  pre.id = "adzoo-measure";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def find_chromium(name: str | None) -> str | None:
    for candidate in [name, os.environ.get("CHROMIUM"), *CANDIDATES]:
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def chromium(binary: str, width: int, height: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def measure(binary: str, page: Path, width: int, height: int) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        text = page.read_text(encoding="utf-8")
        probe.write_text(text.replace("</body>", MEASURE + "</body>") if "</body>" in text else text + MEASURE)
        dom = chromium(binary, width, height, "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="adzoo-measure">(.*?)</pre>', dom, re.S)
    return json.loads(html.unescape(found.group(1))) if found else None


def report(width: int, result: dict | None) -> list[str]:
    if result is None:
        return [f"{width} px: no measurement came back"]
    page = (
        "page fits"
        if result["page"] <= result["viewport"]
        else f"PAGE SCROLLS SIDEWAYS by {result['page'] - result['viewport']} px"
    )
    lines = [f"{width} px (viewport {result['viewport']} px): {page}"]
    for i, table in enumerate(result["tables"]):
        name = "main table" if i == 0 else (table["title"] or f"table {i + 1}")
        over = table["width"] - table["room"]
        where = "scrolls in its own box" if table["box"] else "overflows the page"
        verdict = "fits" if over <= 0 else f"wider by {over} px ({where})"
        lines.append(f"  {name} ({table['columns']} columns): {table['width']} of {table['room']} px, {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="a leaderboard.html")
    parser.add_argument("--widths", type=int, nargs="+", default=[1400, 1366])
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "leaderboard_shots")
    parser.add_argument("--chromium", help="the Chromium binary (default: $CHROMIUM, else the first on PATH)")
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"{args.html}: no such file", file=sys.stderr)
        return 2
    binary = find_chromium(args.chromium)
    if binary is None:
        print(f"no Chromium found (tried {', '.join(CANDIDATES)}); install one, e.g. `apt-get install chromium`, "
              "or pass --chromium", file=sys.stderr)  # fmt: skip
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    page = args.html.resolve()
    for width in args.widths:
        shot = args.out / f"leaderboard_{width}.png"
        done = chromium(binary, width, args.height, f"--screenshot={shot}", page.as_uri())
        print(f"{shot}" if shot.is_file() else f"{width} px: no screenshot ({done.stderr.strip()[-200:]})")
        print("\n".join(report(width, measure(binary, page, width, args.height))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
