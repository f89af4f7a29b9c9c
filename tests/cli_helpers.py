"""Running the real ``curate`` CLI in a subprocess, and the shape every refusal must have."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "curate.cli"]


def run_cli(store: str | Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``curate --store STORE ARGS...`` as a user runs it; wide COLUMNS so rich never folds a one-line error."""
    return subprocess.run(
        [*CLI, "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "300"},
    )


def refused(p: subprocess.CompletedProcess, *needles: str) -> str:
    """The one stderr line of a refusal (exit 2, ``error:``, no traceback) that names each of ``needles``."""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in p.stderr, p.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
