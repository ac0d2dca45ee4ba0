"""Find a kernel header tree for bcc to compile against.

bcc compiles BPF C at runtime and needs *some* kernel headers for its helper
definitions. vigil never reads a kernel struct through header layouts (offsets
come from BTF, see ``btf``), so any reasonably recent tree will do; what
matters is finding one without the user's help. Places, in order:

1. ``$VIGIL_KERNEL_HEADERS`` (explicit override)
2. the host's ``/lib/modules/$(uname -r)/{build,source}``
3. ``/sys/kernel/kheaders.tar.xz`` (CONFIG_IKHEADERS), extracted once into a cache
4. the tree ``scripts/setup.sh`` lays out from Debian's headers packages
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

PREPARED_TREE = Path("/var/lib/vigil/kernel-headers")
KHEADERS_ARCHIVE = Path("/sys/kernel/kheaders.tar.xz")
KHEADERS_CACHE = Path("/var/cache/vigil/kheaders")
_MARKER = "include/linux/kconfig.h"


class HeadersNotFound(RuntimeError):
    """No usable header tree; the message lists every place that was tried."""


@dataclass(frozen=True, slots=True)
class HeaderTree:
    path: Path
    source: str  # "env", "host", "kheaders" or "prepared"

    def describe(self) -> str:
        return f"{self.path} ({self.source})"


def _usable(path: Path) -> bool:
    return (path / _MARKER).is_file()


def _extract_kheaders(archive: Path, cache_root: Path, release: str) -> Path:
    target = cache_root / release
    if _usable(target):
        return target
    staging = cache_root / f".{release}.{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    staging.rename(target)
    return target


def resolve_headers(
    *,
    release: str | None = None,
    env: dict[str, str] | None = None,
    prepared: Path = PREPARED_TREE,
    kheaders: Path = KHEADERS_ARCHIVE,
    kheaders_cache: Path = KHEADERS_CACHE,
    modules_root: Path = Path("/lib/modules"),
) -> HeaderTree:
    """Return the first usable header tree, or raise naming every place tried."""
    release = release or os.uname().release
    env = dict(os.environ) if env is None else env
    tried: list[str] = []

    override = env.get("VIGIL_KERNEL_HEADERS")
    if override:
        if _usable(Path(override)):
            return HeaderTree(Path(override), "env")
        tried.append(f"$VIGIL_KERNEL_HEADERS={override} (no {_MARKER})")

    for flavour in ("build", "source"):
        candidate = modules_root / release / flavour
        if _usable(candidate):
            return HeaderTree(candidate.resolve(), "host")
        tried.append(str(candidate))

    if kheaders.is_file():
        try:
            return HeaderTree(_extract_kheaders(kheaders, kheaders_cache, release), "kheaders")
        except (OSError, tarfile.TarError) as exc:
            tried.append(f"{kheaders} (extract failed: {exc})")
    else:
        tried.append(f"{kheaders} (load the kheaders module to get it)")

    if _usable(prepared):
        return HeaderTree(prepared, "prepared")
    tried.append(f"{prepared} (run scripts/setup.sh to prepare it)")

    raise HeadersNotFound("no kernel headers found; tried: " + "; ".join(tried))


def bcc_environment(tree: HeaderTree) -> dict[str, str]:
    """Environment bcc reads at compile time to find the tree."""
    return {"BCC_KERNEL_SOURCE": str(tree.path)}
