"""`vigil-operator`: reconciles ProbePolicy resources into agent configuration.

The reconcile logic and kopf handlers arrive with the ProbePolicy work; until
then the command only identifies itself, and says so instead of pretending.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vigil import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vigil-operator",
        description="kopf operator for ProbePolicy resources (not implemented yet).",
    )
    parser.add_argument("--version", action="version", version=f"vigil-operator {__version__}")
    parser.parse_args(argv)
    print("vigil-operator: the ProbePolicy operator is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
