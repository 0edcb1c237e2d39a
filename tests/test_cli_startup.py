"""Start-up cost of the command line (issue 15): `vitrina --help` must not import the numeric stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "statsmodels", "polars", "sklearn", "matplotlib", "fastapi", "implicit")


def test_help_imports_no_heavy_library() -> None:
    """Importing the CLI and rendering --help loads none of the libraries that made every call ~4 s."""
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from vitrina.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": ""},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_license_matches_pyproject() -> None:
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert declared == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
