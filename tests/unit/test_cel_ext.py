"""vigil loads the CEL engine without the cel package's command-line tool (vigil.api.cel_ext).

`import cel` costs ~150 ms more than the engine (cel.cli pulls in typer, prompt_toolkit,
pygments) at every agent and operator start. Each check runs in a fresh interpreter:
in this one, other tests may already have imported `cel`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where vigil's modules live, and the import name each folder has.
SOURCES = {"agent": "vigil.agent", "operator": "vigil.operator", "vigil/api": "vigil.api"}
# The processes vigil starts: the agent's runtime and the operator's handlers.
ENTRY_POINTS = ["vigil.agent.runtime", "vigil.operator.handlers", "vigil.operator.cli"]


def _modules_using_cel() -> list[str]:
    found = []
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "vigil.api.cel_ext" in path.read_text():
                parts = path.relative_to(ROOT / folder).with_suffix("").parts
                found.append(".".join((package, *parts)))
    return found


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout


def test_vigil_imports_cel_only_through_cel_ext() -> None:
    direct = re.compile(r"^\s*(import cel\b|from cel\b)", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in SOURCES
        for path in (ROOT / folder).rglob("*.py")
        if direct.search(path.read_text()) and path.name != "cel_ext.py"
    ]
    assert offenders == []


def test_cel_using_modules_do_not_load_the_cel_cli() -> None:
    modules = _modules_using_cel()
    assert "vigil.agent.rules.engine" in modules
    assert "vigil.api.policy" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {[*modules, *ENTRY_POINTS]!r}:\n"
        "    importlib.import_module(name)\n"
        "print(' '.join(sorted(m for m in sys.modules if m == 'cel' or m.startswith('cel.'))))\n"
    )
    assert _run(code).split() == ["cel.cel"]


def test_a_later_import_cel_shares_the_loaded_engine() -> None:
    code = (
        "from vigil.api.cel_ext import cel as engine\n"
        "import cel\n"
        "print(cel.Program is engine.Program, cel.compile is engine.compile)\n"
        "print(engine.compile('attributes[\"a\"] > 1').execute("
        "engine.Context(variables={'attributes': {'a': 2}})))\n"
    )
    assert _run(code).split() == ["True", "True", "True"]
