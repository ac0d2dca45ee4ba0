"""The package layout: no import cycle, layers that only point down (DESIGN.md, principle 10).

Imports are read with `ast` from the files under agent/, operator/ and
vigil/ (never through the vigil/agent link), every one of them: top-level,
inside functions and under TYPE_CHECKING alike, since a lazy import hides a
cycle from the interpreter but not from a reader.

The agent's floors, bottom first. A module may import from lower floors and
from its own package; peers on one floor never import each other:

    0  vigil, vigil.api                      models shared with the operator
    1  kernel                                BTF, headers, tracefs, features
    2  pipeline                              events, samples, seams, reader, dispatcher
    3  probes | enrich | rules               producers and stages
    4  selection | telemetry                 policies over enrich+rules; OTel export
    5  sinks | checks                        console, JSON lines, OTLP; checks over signals
    6  supervisor                            probe lifecycle
    7  runtime | config_watch                the agent; the config file watcher
    8  doctor | endpoint | inspect | top     host check; health endpoint; report; live view
    9  cli                                   the entry point

The events flow kernel -> probes -> pipeline -> enrich -> selection (rules)
-> telemetry/sinks; the pipeline sits below the probes in imports because it
owns the vocabulary and the seams every stage speaks (as the OpenTelemetry
SDK keeps its exporter interface beside its processors).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Import package -> folder holding its files (the real folders, not the links).
TREES = {"vigil.agent": "agent", "vigil.operator": "operator", "vigil": "vigil"}
SKIP_IN_VIGIL = {"agent", "operator", "bpf"}  # links to the top-level folders

FLOORS: tuple[tuple[str, ...], ...] = (
    ("vigil", "vigil.api"),
    ("vigil.agent.kernel",),
    ("vigil.agent.pipeline",),
    ("vigil.agent.probes", "vigil.agent.enrich", "vigil.agent.rules"),
    ("vigil.agent.selection", "vigil.agent.telemetry"),
    ("vigil.agent.sinks", "vigil.agent.checks"),
    ("vigil.agent.supervisor",),
    ("vigil.agent.runtime", "vigil.agent.config_watch"),
    ("vigil.agent.doctor", "vigil.agent.endpoint", "vigil.agent.inspect", "vigil.agent.top"),
    ("vigil.agent.cli",),
)
# The operator stands on the shared models alone and never meets the agent.
OPERATOR = "vigil.operator"
OPERATOR_MAY_IMPORT = ("vigil.api", OPERATOR)


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def modules(root: Path = ROOT, trees: Mapping[str, str] = TREES) -> dict[str, Path]:
    """Module name -> file, for every .py file of the trees."""
    found: dict[str, Path] = {}
    for package, folder in trees.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            relative = path.relative_to(base)
            if package == "vigil" and relative.parts[0] in SKIP_IN_VIGIL:
                continue
            parts = [part for part in relative.with_suffix("").parts if part != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _is_package(name: str, known: Mapping[str, Path]) -> bool:
    return known[name].name == "__init__.py" or any(m.startswith(name + ".") for m in known)


def imports(known: Mapping[str, Path], root: Path = ROOT) -> Iterator[Import]:
    """Every import of a known module by a known module, wherever it is written."""
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = module if _is_package(module, known) else module.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from a.b import c` imports a.b.c when that is a module, else a.b.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            for name in targets:
                target = name
                while target and target not in known:  # `import a.b.c` of a known `a.b`
                    target = target.rpartition(".")[0]
                if target and target != module:
                    yield Import(module, target, path.relative_to(root), node.lineno)


def cycles(edges: Iterable[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.module, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _owner(module: str, packages: Iterable[str]) -> str | None:
    """The longest listed package that `module` is or belongs to."""
    matches = [p for p in packages if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def floor_of(module: str) -> tuple[int, str] | None:
    """(floor, package) of an agent or shared module; None for the operator."""
    listed = {package: floor for floor, packages in enumerate(FLOORS) for package in packages}
    owner = _owner(module, listed)
    if owner == "vigil" and module.startswith(("vigil.agent", OPERATOR)):
        return None  # the agent's own top (vigil.agent) or the operator
    return (listed[owner], owner) if owner is not None else None


def violations(edges: Iterable[Import]) -> list[str]:
    """Imports that point up, sideways between peers, or between agent and operator."""
    problems = []
    for edge in edges:
        importer_is_operator = edge.module.startswith(OPERATOR)
        if importer_is_operator or edge.target.startswith(OPERATOR):
            allowed = importer_is_operator and (
                edge.target == "vigil" or _owner(edge.target, OPERATOR_MAY_IMPORT) is not None
            )
            if not allowed:
                problems.append(f"{edge}: the operator and the agent share only vigil.api")
            continue
        here, there = floor_of(edge.module), floor_of(edge.target)
        if here is None or there is None:
            continue  # the vigil.agent package itself: an empty namespace
        (floor, package), (target_floor, target_package) = here, there
        if package == target_package:
            continue
        if target_floor > floor:
            problems.append(
                f"{edge}: {target_package} (floor {target_floor}) is above "
                f"{package} (floor {floor}); layers point down"
            )
        elif target_floor == floor:
            problems.append(f"{edge}: {package} and {target_package} are peers on floor {floor}")
    return problems


# -- promises of the package layout that are easy to break by accident -------------------


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


# -- the project's import graph ---------------------------------------------------------


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    return list(imports(modules()))


def test_the_trees_are_read_from_the_real_folders() -> None:
    found = modules()
    assert "vigil.agent.pipeline.dispatch" in found
    assert "vigil.operator.reconcile" in found
    assert "vigil.api.config" in found
    assert all("vigil/agent" not in str(path) for path in found.values())


def test_no_import_cycle(project_imports: list[Import]) -> None:
    assert cycles(project_imports) == []


def test_layers_point_down(project_imports: list[Import]) -> None:
    assert violations(project_imports) == []


def test_every_agent_module_has_a_floor() -> None:
    homeless = [
        name
        for name in modules()
        if name.startswith("vigil.agent.") and floor_of(name) in (None, (0, "vigil"))
    ]
    assert homeless == [], "add the new package to FLOORS in tests/unit/test_layout.py"


# -- the checker catches what it should (a made-up tree) ------------------------------------


def _tree(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return modules(root, {"vigil.agent": "agent", "vigil.operator": "operator"})


def test_a_lazy_import_cycle_is_found(tmp_path: Path) -> None:
    known = _tree(
        tmp_path,
        {
            "agent/__init__.py": "",
            "agent/telemetry/__init__.py": "",
            "agent/telemetry/export.py": (
                "def sink():\n    from vigil.agent.sinks.otlp import OtlpSink\n"
            ),
            "agent/sinks/__init__.py": "",
            "agent/sinks/otlp.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from vigil.agent.telemetry import export\n"
            ),
        },
    )
    assert cycles(imports(known, tmp_path)) == [
        ["vigil.agent.sinks.otlp", "vigil.agent.telemetry.export"]
    ]


def test_an_upward_import_is_named_with_its_line(tmp_path: Path) -> None:
    known = _tree(
        tmp_path,
        {
            "agent/__init__.py": "",
            "agent/pipeline/__init__.py": "",
            "agent/pipeline/ringbuf.py": "import os\n\nfrom vigil.agent.probes.base import Probe\n",
            "agent/probes/__init__.py": "",
            "agent/probes/base.py": "from vigil.agent.pipeline import ringbuf\n",
            "agent/rules/__init__.py": "",
            "agent/rules/engine.py": "from ..probes import base\n",
            "operator/handlers.py": "from vigil.agent.probes import base\n",
        },
    )
    problems = violations(imports(known, tmp_path))
    assert problems == [
        "agent/pipeline/ringbuf.py:3: vigil.agent.pipeline.ringbuf imports "
        "vigil.agent.probes.base: vigil.agent.probes (floor 3) is above "
        "vigil.agent.pipeline (floor 2); layers point down",
        "agent/rules/engine.py:1: vigil.agent.rules.engine imports vigil.agent.probes.base: "
        "vigil.agent.rules and vigil.agent.probes are peers on floor 3",
        "operator/handlers.py:1: vigil.operator.handlers imports vigil.agent.probes.base: "
        "the operator and the agent share only vigil.api",
    ]
