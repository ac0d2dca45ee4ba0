"""Newest kernel of each Debian suite, from the apt lists of a throwaway apt config.

Usage: resolve.py LISTS_DIR SUITE... -> one line per suite found:
    <suite> <linux-image-amd64 version> <package>=<version> ...
(the packages that carry the kernel and its modules; 7.x splits them into
linux-binary-<abi> and linux-modules-<abi>, earlier kernels ship one
linux-image-<abi>). A suite whose lists are missing prints nothing.

Never pins ABI names: Debian drops versioned packages when it publishes a newer
ABI, so they are resolved from the metapackage's Depends every time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def _stanzas(path: Path) -> list[dict[str, str]]:
    # apt may keep lists compressed (lz4, gz, ...): its helper reads any of them.
    text = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True
    ).stdout.decode(errors="replace")
    out: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package", "").startswith(
            ("linux-image-", "linux-binary-", "linux-modules-", "linux-base-")
        ):
            out.append(fields)
    return out


def _newest(versions: list[str]) -> str:
    best = versions[0]
    for version in versions[1:]:
        if (
            subprocess.run(
                ["dpkg", "--compare-versions", version, "gt", best], check=False
            ).returncode
            == 0
        ):
            best = version
    return best


def _depends(fields: dict[str, str]) -> list[str]:
    return [re.split(r"[\s(|]", dep.strip())[0] for dep in fields.get("Depends", "").split(",")]


def resolve(lists: Path, suite: str) -> str | None:
    archive = "debian-security" if suite.endswith("-security") else "debian"
    files = sorted(lists.glob(f"*_{archive}_dists_{suite}_main_binary-amd64_Packages*"))
    if not files:
        return None
    packages: dict[str, dict[str, str]] = {}
    meta: list[dict[str, str]] = []
    for fields in _stanzas(files[0]):
        if fields["Package"] == "linux-image-amd64":
            meta.append(fields)
        else:
            packages[fields["Package"]] = fields
    if not meta:
        return None
    version = _newest([m["Version"] for m in meta])
    top = next(m for m in meta if m["Version"] == version)
    wanted: list[str] = []
    todo = [d for d in _depends(top) if d.startswith("linux-image-")]
    while todo:  # linux-image-<abi> (7.x: empty) -> linux-binary-<abi>, linux-modules-<abi>
        name = todo.pop()
        fields = packages.get(name)
        if fields is None or name in wanted:
            continue
        wanted.append(name)
        todo += [
            d
            for d in _depends(fields)
            if d.startswith(("linux-binary-", "linux-modules-", "linux-base-"))
        ]
    if not wanted:
        return None
    pins = " ".join(f"{name}={packages[name]['Version']}" for name in wanted)
    return f"{suite} {version} {pins}"


def main() -> int:
    lists = Path(sys.argv[1])
    for suite in sys.argv[2:]:
        line = resolve(lists, suite)
        if line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
