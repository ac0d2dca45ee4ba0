"""Tracepoint format files: what the kernel publishes about each event's record.

`events/<subsystem>/<event>/format` under tracefs lists every field of the
record a classic tracepoint program receives: its C declaration, offset,
size and signedness. That is the layout vigil's generated programs read
(agent/probes/tracepoint_gen.py), so nothing here depends on kernel headers.

Field kinds:
  scalar    an integer of 1, 2, 4 or 8 bytes (signed or not)
  pointer   any `T *`: an address, reported as an integer (never dereferenced
            unless a subscription asks to read a `const char *` from user memory)
  string    a fixed `char name[N]` array (NUL-terminated text)
  data_loc  `__data_loc T[] name`: a u32 at the offset holding (length << 16 | offset
            of the data from the record's start); `char` data is a string
  rel_loc   `__rel_loc T[] name`: like data_loc, the offset counted from the end of
            the u32 itself
  array     a fixed array of integers (`u8 addr[16]`, `unsigned long args[6]`)
  opaque    anything else (structs by value): not selectable
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vigil.agent.kernel import mounts

FieldKind = Literal["scalar", "pointer", "string", "data_loc", "rel_loc", "array", "opaque"]

_FIELD = re.compile(
    r"^\s*field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"\s*signed:(?P<signed>-?\d+);"
)
_ARRAY = re.compile(r"^(?P<base>.*?)\s*(?P<name>[A-Za-z_]\w*)\s*\[(?P<len>[^\]]*)\]$")
_NAME = re.compile(r"^(?P<base>.*?)\s*(?P<name>[A-Za-z_]\w*)$")
_CHAR_TYPES = {"char", "const char", "unsigned char", "signed char"}
_BYTE_TYPES = {"u8", "__u8", "unsigned char", "uint8_t"}
TRACEPOINT_NAME = re.compile(r"^[A-Za-z0-9_]+:[A-Za-z0-9_.-]+$")


class FormatError(ValueError):
    """A tracepoint that does not exist, or a format file vigil cannot read."""


@dataclass(frozen=True, slots=True)
class FormatField:
    """One field of a tracepoint's record, as its format file describes it."""

    name: str
    ctype: str  # the declaration without the name: "pid_t", "char[16]", "__data_loc char[]"
    offset: int
    size: int
    signed: bool
    kind: FieldKind
    element_size: int = 0  # arrays: bytes per element

    @property
    def is_common(self) -> bool:
        return self.name.startswith("common_")

    @property
    def numeric(self) -> bool:
        """An integer value (pointers included): usable in comparisons, `by` and histograms."""
        return self.kind in ("scalar", "pointer")

    @property
    def textual(self) -> bool:
        return self.kind == "string" or (
            self.kind in ("data_loc", "rel_loc") and self.ctype.split()[-1].startswith("char")
        )

    @property
    def user_string(self) -> bool:
        """A `const char *` pointer: what `readUser` may read (from user memory)."""
        return self.kind == "pointer" and re.sub(r"\s+", "", self.ctype) in (
            "constchar*",
            "char*",
            "constchar*const",
        )

    def describe(self) -> str:
        return f"{self.ctype} {self.name} (offset {self.offset}, size {self.size})"


@dataclass(frozen=True, slots=True)
class TracepointFormat:
    subsystem: str
    event: str
    id: int
    fields: tuple[FormatField, ...]

    @property
    def name(self) -> str:
        return f"{self.subsystem}:{self.event}"

    @property
    def own_fields(self) -> tuple[FormatField, ...]:
        """The event's fields without the `common_*` header every record starts with."""
        return tuple(f for f in self.fields if not f.is_common)

    @property
    def record_size(self) -> int:
        return max((f.offset + f.size for f in self.fields), default=0)

    def field(self, name: str) -> FormatField:
        for candidate in self.own_fields:
            if candidate.name == name:
                return candidate
        names = ", ".join(f.name for f in self.own_fields) or "(none)"
        raise FormatError(f"{self.name} has no field {name!r}; its fields: {names}")


def _classify(decl: str, size: int, signed: bool) -> tuple[str, str, FieldKind, int]:
    """(name, ctype, kind, element size) of one `field:` declaration."""
    decl = " ".join(decl.split())
    for marker, kind in (("__data_loc ", "data_loc"), ("__rel_loc ", "rel_loc")):
        if decl.startswith(marker):
            match = _ARRAY.match(decl[len(marker) :]) or _NAME.match(decl[len(marker) :])
            if match is None:
                raise FormatError(f"cannot read declaration {decl!r}")
            base = match["base"].strip().removesuffix("[]").strip()
            return match["name"], f"{marker.strip()} {base}[]", kind, 0  # type: ignore[return-value]
    array = _ARRAY.match(decl)
    if array is not None:
        base, name = array["base"].strip(), array["name"]
        length_text = array["len"].strip()
        length = int(length_text) if length_text.isdigit() else 0
        ctype = f"{base}[{length_text}]"
        if base in _CHAR_TYPES and base != "unsigned char":
            return name, ctype, "string", 1
        if length > 0 and size % length == 0 and size // length in (1, 2, 4, 8):
            return name, ctype, "array", size // length
        return name, ctype, "opaque", 0
    plain = _NAME.match(decl)
    if plain is None:
        raise FormatError(f"cannot read declaration {decl!r}")
    base, name = plain["base"].strip(), plain["name"]
    if "*" in base:
        return name, base, "pointer", 0
    if size in (1, 2, 4, 8) and not base.startswith(("struct ", "union ")):
        return name, base, "scalar", 0
    return name, base, "opaque", 0


def parse_format(text: str) -> TracepointFormat:
    """Read a format file's text (subsystem from its `name:` line is not given: see load)."""
    name = ""
    event_id = -1
    fields: list[FormatField] = []
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            event_id = int(line.split(":", 1)[1])
        else:
            match = _FIELD.match(line)
            if match is None:
                continue
            size, signed = int(match["size"]), match["signed"] == "1"
            field_name, ctype, kind, element = _classify(match["decl"], size, signed)
            fields.append(
                FormatField(field_name, ctype, int(match["offset"]), size, signed, kind, element)
            )
    if not name or not fields:
        raise FormatError("not a tracepoint format file (no name or no fields)")
    return TracepointFormat("", name, event_id, tuple(fields))


def events_dir(tracefs: Path | None = None) -> Path:
    root = tracefs if tracefs is not None else mounts.ensure_tracefs()
    if root is None:
        raise FormatError("tracefs is not mounted and cannot be (run `vigil-agent doctor`)")
    return root / "events"


def available(tracefs: Path | None = None) -> list[str]:
    """Every "subsystem:event" with a format file, sorted."""
    root = events_dir(tracefs)
    names = []
    for subsystem in sorted(root.iterdir()):
        if not subsystem.is_dir():
            continue
        for event in sorted(subsystem.iterdir()):
            if (event / "format").is_file():
                names.append(f"{subsystem.name}:{event.name}")
    return names


def close_matches(name: str, names: list[str], n: int = 5) -> list[str]:
    """Names like `name`: by the whole name, and by the event part alone."""
    found = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    event = name.partition(":")[2] or name
    by_event = {full.partition(":")[2]: full for full in names}
    for match in difflib.get_close_matches(event, list(by_event), n=n, cutoff=0.7):
        if by_event[match] not in found:
            found.append(by_event[match])
    return found[:n]


def load(tracepoint: str, tracefs: Path | None = None) -> TracepointFormat:
    """The format of "subsystem:event"; FormatError names close matches when it does not exist."""
    if not TRACEPOINT_NAME.match(tracepoint):
        raise FormatError(f"{tracepoint!r} is not a tracepoint name (subsystem:event)")
    subsystem, _, event = tracepoint.partition(":")
    path = events_dir(tracefs) / subsystem / event / "format"
    try:
        text = path.read_text()
    except FileNotFoundError:
        close = close_matches(tracepoint, available(tracefs))
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise FormatError(
            f"no tracepoint {tracepoint} in this kernel{hint} "
            "(`vigil-agent tracepoints` lists them)"
        ) from None
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror}") from None
    parsed = parse_format(text)
    return TracepointFormat(subsystem, event, parsed.id, parsed.fields)


def iter_formats(tracefs: Path | None = None) -> Iterator[TracepointFormat]:
    """Every readable tracepoint format, in name order (unreadable ones are skipped)."""
    for name in available(tracefs):
        try:
            yield load(name, tracefs)
        except FormatError:
            continue
