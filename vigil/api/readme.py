"""Tables generated into README.md between marker comments (attributes, metrics).

One writer for every registry that documents itself: the README keeps a
`<!-- name:begin -->` / `<!-- name:end -->` pair, the registry renders the
Markdown table, and `python -m vigil.api.<registry> --readme README.md`
rewrites what lies between the markers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path


def with_table(readme: str, table: str, *, begin: str, end: str) -> str:
    """`readme` with `table` between the markers (ValueError without them)."""
    start, stop = readme.find(begin), readme.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no {begin} ... {end} section")
    return f"{readme[: start + len(begin)]}\n{table}{readme[stop:]}"


def table_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    table: Callable[[], str],
    rewrite: Callable[[str], str],
    what: str,
) -> int:
    """`--markdown` prints the table; `--readme FILE` rewrites FILE's section of it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the Markdown table")
    action.add_argument(
        "--readme", type=Path, metavar="FILE", help="rewrite the table between FILE's markers"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(table(), end="")
        return 0
    path: Path = args.readme
    text = path.read_text()
    try:
        updated = rewrite(text)
    except ValueError as exc:
        parser.error(f"{path}: {exc}")
    if updated != text:
        path.write_text(updated)
        print(f"{path}: {what} table updated")
    return 0
