"""The CEL engine (PyPI `common-expression-language`) without its command-line tool.

`import cel` runs the package's ``__init__``, which imports ``cel.cli`` (typer,
prompt_toolkit, pygments, rich: ~150 ms) before the compiled extension ``cel.cel`` that
holds everything vigil uses (`compile`, `evaluate`, `Program`, `Context`). Importing
``cel.cel`` by name runs that ``__init__`` too, so the extension is loaded here from the
package's folder without executing the package, and registered as ``cel.cel`` so that a
later `import cel` (tests, tools) reuses this same module rather than loading it twice.

Use it as ``from vigil.api.cel_ext import cel``; ``cel.compile(...)`` etc. as usual.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING

_EXTENSION = "cel.cel"


def _extension() -> ModuleType:
    loaded = sys.modules.get(_EXTENSION)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("cel")  # finds the package, does not run it
    if package is None or not package.submodule_search_locations:
        raise ImportError("the cel package (common-expression-language) is not installed")
    spec = importlib.machinery.PathFinder.find_spec(
        _EXTENSION, list(package.submodule_search_locations)
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"no {_EXTENSION} extension in {package.submodule_search_locations}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_EXTENSION] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_EXTENSION]
        raise
    return module


if TYPE_CHECKING:
    from cel import cel
else:
    cel = _extension()

__all__ = ["cel"]
