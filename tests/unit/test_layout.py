"""Promises of the package layout that are easy to break by accident."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_folder_never_shadows_the_stdlib() -> None:
    # Even with the project root first on sys.path (as pytest puts it).
    code = "import sys; sys.path.insert(0, sys.argv[1]); import operator; print(operator.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True
    ).stdout
    assert not out.strip().startswith(str(ROOT))


def test_bcc_is_not_a_pypi_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [
        dep.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip().lower()
        for dep in project["dependencies"]
    ]
    assert "bcc" not in names


def test_bpf_c_lives_in_files_not_python_strings() -> None:
    needle = "BPF(" + "text="
    offenders = [
        path
        for path in ROOT.glob("[!.]*/**/*.py")
        if needle in path.read_text(errors="replace") and ".venv" not in path.parts
    ]
    assert offenders == []
