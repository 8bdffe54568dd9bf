"""Every app's ``--help``: exit status 0, plain text (no reST markup), and the keys people set most."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
KEYS = {
    "adzoo-train": ["method=", "data=", "data.root=", "paths.log_dir=", "torch_threads=", "seed=", "trainer=",
                    "logger=", "sweep=", "-m", "verbose=true", "debug"],
    "adzoo-eval": ["ckpt_path=", "data.categories=", "paths.log_dir=", "torch_threads=", "verbose=true"],
    "adzoo-predict": ["ckpt=", "input=", "output=", "threshold=", "device="],
    "adzoo-export": ["ckpt=", "output=", "format=", "category="],
    "adzoo-leaderboard": ["--out", "--thresholds", "--no-plots", "runs"],
    "adzoo-data": ["data=", "data.root=", "--no-check"],
}  # fmt: skip


@pytest.mark.parametrize("app", sorted(KEYS))
def test_help_exits_0_in_plain_text_with_the_common_keys(app: str) -> None:
    proc = subprocess.run([str(BIN / app), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "``" not in proc.stdout and "`" not in proc.stdout, proc.stdout
    missing = [key for key in KEYS[app] if key not in proc.stdout]
    assert missing == [], proc.stdout
