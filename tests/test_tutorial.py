"""docs/tutorial.md runs top to bottom (issue 15): its bash blocks are executed in order, in an
empty folder, with `vitrina` being this checkout's command line."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tutorial_script() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "docs" / "tutorial.md").read_text(), re.S)
    assert len(blocks) >= 6, "the tutorial lost its commands"
    return "set -euo pipefail\n" + "\n".join(blocks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tutorial_runs_top_to_bottom(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "vitrina"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vitrina.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    python3 = bin_dir / "python3"
    python3.symlink_to(sys.executable)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO / "src"),
        "PORT": str(_free_port()),
        "COLUMNS": "100",
    }
    run = subprocess.run(
        ["bash", "-c", tutorial_script()], cwd=work, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-5000:]}"
    for path in (
        "events.csv",
        "results/shop/results.json",
        "tune/ease/best.toml",
        "results/shop-tuned/results.json",
        "models/ease/config.json",
        "catalog.parquet",
        "design.json",
    ):
        assert (work / path).is_file(), path
    assert '"model_version"' in run.stdout and '"items"' in run.stdout  # the service answered
    assert "http://127.0.0.1:" in run.stderr  # serve printed its address
