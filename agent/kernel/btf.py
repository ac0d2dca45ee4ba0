"""Struct member offsets from the running kernel's own BTF, in pure Python.

vigil's BPF programs read kernel-internal structs (``task_struct``, ``mm_struct``,
``sock``, ``tcp_sock``) with ``bpf_probe_read_kernel`` at offsets passed in as
``-D`` macros. The kernel headers available at compile time do not describe the
running kernel (on the project's 6.18 machines ``task_struct.pid`` is at byte
1264; Debian's 6.1 headers say 2416), so those offsets come from
``/sys/kernel/btf/vmlinux`` and must be exact: a wrong offset reads garbage
without any error.

The reader indexes the type section in one pass (the byte offset of every type
record, nothing more), names struct/union types on first use, and walks only the
types a lookup touches. Every malformed, truncated or cyclic input raises
:class:`BTFError`; nothing else escapes.

Format reference: the kernel's Documentation/bpf/btf.rst (``struct btf_header``,
``struct btf_type`` and the per-kind trailing data).

Only self-contained BTF is understood: split BTF (kernel modules'
``/sys/kernel/btf/<module>``, whose type ids continue the vmlinux ones) is not.
"""

from __future__ import annotations

import difflib
import functools
import os
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "BTF",
    "VMLINUX_PATH",
    "BTFError",
    "MemberLocation",
    "MemberNotFound",
    "load_vmlinux",
]

VMLINUX_PATH: Final = Path("/sys/kernel/btf/vmlinux")

_MAGIC: Final = 0xEB9F
_HEADER_LEN: Final = 24  # struct btf_header up to and including str_len
_RECORD_LEN: Final = 12  # struct btf_type: name_off, info, size/type
# libbpf's MAX_RESOLVE_DEPTH: real chains (typedef -> const -> volatile -> ...,
# anonymous unions in anonymous structs) are a handful deep; anything deeper is
# a cycle or garbage.
_MAX_DEPTH: Final = 32
# Display names only: how many types one name may visit before it is cut short.
_NAME_BUDGET: Final = 256

_INT: Final = 1
_PTR: Final = 2
_ARRAY: Final = 3
_STRUCT: Final = 4
_UNION: Final = 5
_ENUM: Final = 6
_FWD: Final = 7
_TYPEDEF: Final = 8
_VOLATILE: Final = 9
_CONST: Final = 10
_RESTRICT: Final = 11
_FUNC: Final = 12
_FUNC_PROTO: Final = 13
_VAR: Final = 14
_DATASEC: Final = 15
_FLOAT: Final = 16
_DECL_TAG: Final = 17
_TYPE_TAG: Final = 18
_ENUM64: Final = 19

_KIND_NAMES: Final = (
    "UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF",
    "VOLATILE", "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC",
    "FLOAT", "DECL_TAG", "TYPE_TAG", "ENUM64",
)  # fmt: skip

# Bytes each record occupies: the btf_type itself plus a single trailing struct
# (by kind), plus a part per vlen item. -1 marks kinds this reader does not
# know, whose length it therefore cannot skip.
_TRAILER_LEN: Final = {_INT: 4, _ARRAY: 12, _VAR: 4, _DECL_TAG: 4}
_ITEM_LEN: Final = {_STRUCT: 12, _UNION: 12, _ENUM: 8, _FUNC_PROTO: 8, _DATASEC: 12, _ENUM64: 12}
_RECORD_FIXED: Final = tuple(
    _RECORD_LEN + _TRAILER_LEN.get(kind, 0) if _INT <= kind <= _ENUM64 else -1 for kind in range(32)
)
_RECORD_ITEM: Final = tuple(_ITEM_LEN.get(kind, 0) for kind in range(32))

_COMPOSITES: Final = frozenset({_STRUCT, _UNION})
_MODIFIERS: Final = frozenset({_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG})
_SIZED: Final = frozenset({_INT, _STRUCT, _UNION, _ENUM, _ENUM64, _FLOAT})
_TAGS: Final = {_STRUCT: "struct", _UNION: "union", _ENUM: "enum", _ENUM64: "enum"}
# Names libbpf accepts as evidence of the target's pointer size (btf__pointer_size).
_LONG_NAMES: Final = frozenset(
    {b"long", b"long int", b"long signed int", b"unsigned long", b"long unsigned int",
     b"unsigned long int"}
)  # fmt: skip


class BTFError(Exception):
    """The reader's only error type.

    Raised for malformed or truncated BTF, cyclic type chains, paths that cannot
    be walked (through a pointer, into a non-struct) and, as :class:`MemberNotFound`,
    unknown struct or member names. The message names what was wrong and where
    (the source file or ``<bytes>``, the type id, the path).
    """


class MemberNotFound(BTFError):
    """A struct/union name or a member name that the BTF does not have.

    Separate from :class:`BTFError` so callers can disable one attribute of a
    probe (this kernel lacks the field) while treating broken BTF as fatal.
    The message suggests close names when there are any.
    """


@dataclass(frozen=True, slots=True)
class MemberLocation:
    """Where a member lives inside its outermost struct.

    For a plain member, read ``size`` bytes at ``offset``. For a bitfield
    (``bitfield_size`` set), ``offset`` is the start of the naturally aligned
    ``size``-byte storage unit that holds it (what libbpf's CO-RE computes as
    the field's byte offset); on a little-endian machine the value is
    ``(unit >> (bit_offset - 8 * offset)) & ((1 << bitfield_size) - 1)``. In a
    packed struct whose bitfield straddles that unit, ``offset`` falls back to
    ``bit_offset // 8`` and reading ``size`` bytes may not cover the field.
    """

    path: str
    offset: int
    size: int
    bit_offset: int
    bitfield_size: int | None
    type_name: str

    @property
    def is_bitfield(self) -> bool:
        """True when the value is a bit range that must be shifted and masked."""
        return self.bitfield_size is not None


@dataclass(frozen=True, slots=True)
class _Found:
    type_id: int
    bit_offset: int  # relative to the composite it was searched in
    bitfield_size: int | None


class BTF:
    """A parsed BTF blob, answering struct layout questions.

    Build it with :meth:`from_bytes` or :meth:`from_file` (or :func:`load_vmlinux`
    for the running kernel, cached). Instances are immutable after construction
    apart from lazily built name indexes, so one can be shared between threads.
    """

    __slots__ = (
        "_composite_ids",
        "_data",
        "_int_ids",
        "_named",
        "_offsets",
        "_pointer_size",
        "_source",
        "_str_end",
        "_str_len",
        "_str_start",
        "_structs",
        "_u32",
        "_u32x2",
        "_u32x3",
        "_unions",
    )

    def __init__(self, data: bytes, *, source: str) -> None:
        """Parse ``data``; prefer :meth:`from_bytes` / :meth:`from_file`."""
        self._data = data
        self._source = source
        self._structs: dict[bytes, int] | None = None
        self._unions: dict[bytes, int] | None = None
        self._named: dict[int, frozenset[bytes]] = {}
        self._pointer_size: int | None = None
        order, type_start, type_end, str_start, str_end = self._parse_header()
        self._u32 = struct.Struct(order + "I")
        self._u32x2 = struct.Struct(order + "II")
        self._u32x3 = struct.Struct(order + "III")
        self._str_start = str_start
        self._str_end = str_end
        self._str_len = str_end - str_start
        self._offsets, self._composite_ids, self._int_ids = self._index_types(type_start, type_end)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> BTF:
        """Parse a BTF blob held in memory (tests, BTF extracted from an ELF section)."""
        return cls(bytes(data), source="<bytes>")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BTF:
        """Read and parse a raw BTF file such as ``/sys/kernel/btf/vmlinux``.

        An unreadable file (missing, permission denied, a directory) is a
        :class:`BTFError` naming the path, so callers handle one error type.
        """
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BTFError(f"cannot read BTF from {name}: {e.strerror or e}") from e
        return cls(data, source=name)

    def _parse_header(self) -> tuple[str, int, int, int, int]:
        data = self._data
        if len(data) < _HEADER_LEN:
            raise BTFError(
                f"{self._source}: {len(data)} bytes is too short for a BTF header "
                f"({_HEADER_LEN} bytes)"
            )
        (magic,) = struct.unpack_from("<H", data, 0)
        if magic == _MAGIC:
            order = "<"
        elif magic == 0x9FEB:  # the magic as a big-endian writer stored it
            order = ">"
        else:
            raise BTFError(
                f"{self._source}: not BTF (magic 0x{magic:04x} read little-endian, "
                f"expected 0x{_MAGIC:04x})"
            )
        version = data[2]
        if version != 1:
            raise BTFError(f"{self._source}: unsupported BTF version {version} (expected 1)")
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(order + "5I", data, 4)
        if hdr_len < _HEADER_LEN or hdr_len > len(data):
            raise BTFError(
                f"{self._source}: header length {hdr_len} is outside "
                f"{_HEADER_LEN}..{len(data)} (file size)"
            )
        type_start = hdr_len + type_off
        str_start = hdr_len + str_off
        for section, start, length in (
            ("type", type_start, type_len),
            ("string", str_start, str_len),
        ):
            if start + length > len(data):
                raise BTFError(
                    f"{self._source}: {section} section (bytes {start}..{start + length}) runs "
                    f"past the end of the data ({len(data)} bytes): truncated?"
                )
        if str_len == 0 or data[str_start] != 0:
            raise BTFError(f"{self._source}: string section does not start with an empty string")
        return order, type_start, type_start + type_len, str_start, str_start + str_len

    def _index_types(self, start: int, end: int) -> tuple[array[int], array[int], array[int]]:
        """Record where each type starts; note struct/union and int ids on the way.

        The one hot loop of the reader (~150k records for vmlinux): one unpack per
        record, two tuple lookups, no per-type objects.
        """
        unpack_info = self._u32.unpack_from
        data = self._data
        fixed = _RECORD_FIXED
        item = _RECORD_ITEM
        composite_kinds = _COMPOSITES
        int_kind = _INT
        offsets = array("Q", [0])  # type id 0 is void and has no record
        composites = array("I")
        ints = array("I")
        off = start
        while off < end:
            if end - off < _RECORD_LEN:
                raise BTFError(
                    f"{self._source}: type section ends inside type [{len(offsets)}] "
                    f"(byte {off - start} of {end - start})"
                )
            (info,) = unpack_info(data, off + 4)
            kind = (info >> 24) & 0x1F
            length = fixed[kind]
            if length < 0:
                raise BTFError(
                    f"{self._source}: type [{len(offsets)}] has unknown kind {kind} "
                    f"(byte {off - start} of the type section)"
                )
            length += item[kind] * (info & 0xFFFF)
            if off + length > end:
                raise BTFError(
                    f"{self._source}: type [{len(offsets)}] ({_KIND_NAMES[kind]}, {length} bytes) "
                    f"runs past the end of the type section: truncated?"
                )
            if kind in composite_kinds:
                composites.append(len(offsets))
            elif kind == int_kind:
                ints.append(len(offsets))
            offsets.append(off)
            off += length
        return offsets, composites, ints

    # -- public queries -------------------------------------------------------------

    def member(self, path: str) -> MemberLocation:
        """Locate ``struct.member[.member...]``, e.g. ``"sock.__sk_common.skc_family"``.

        The first component names a struct (or, failing that, a union); later ones
        name members, found through anonymous structs/unions as C does. Walking
        into a pointer is refused: the BPF side must read the pointer first and
        look the pointee up separately.
        """
        parts = path.split(".")
        if len(parts) < 2 or not all(parts):
            raise BTFError(
                f"invalid member path {path!r}: expected 'struct.member[.member...]', "
                "e.g. 'task_struct.tgid'"
            )
        type_id = self._composite_id(parts[0])
        walked = parts[0]
        bit_offset = 0
        found: _Found | None = None
        for name in parts[1:]:
            if found is not None:
                type_id = self._descend(found, walked, next_name=name)
            hit = self._find_member(type_id, _encode(name), set(), 0)
            if hit is None:
                raise MemberNotFound(self._missing_member_message(type_id, name, walked))
            found = hit
            bit_offset += hit.bit_offset
            walked = f"{walked}.{name}"
        assert found is not None  # the path has at least one member component
        return self._location(path, found, bit_offset)

    def struct_size(self, name: str) -> int:
        """Byte size of the struct (or union) called ``name``, e.g. to bound a read."""
        type_id = self._composite_id(name)
        return self._record(type_id)[3]

    def has_struct(self, name: str) -> bool:
        """Whether a struct or union called ``name`` exists.

        For feature checks: a missing name is ``False``, not an exception (broken
        BTF still raises :class:`BTFError`).
        """
        structs, unions = self._name_indexes()
        key = _encode(name)
        return key in structs or key in unions

    def has_typedef(self, name: str) -> bool:
        """Whether a typedef called ``name`` exists.

        A kernel declares ``typedef void (*btf_trace_<event>)(void *, ...)`` for
        every raw tracepoint it has, so this answers "does this kernel have the
        tracepoint?" from its BTF alone (``vigil-agent doctor --btf``).
        """
        return _encode(name) in self._names_of_kind(_TYPEDEF)

    def has_function(self, name: str) -> bool:
        """Whether a function (BTF_KIND_FUNC) called ``name`` exists, e.g. ``__x64_sys_accept4``."""
        return _encode(name) in self._names_of_kind(_FUNC)

    def has_enumerator(self, name: str) -> bool:
        """Whether any enum has a value called ``name``, e.g. ``BPF_MAP_TYPE_TASK_STORAGE``."""
        key = _encode(name)
        for type_id in self._ids_of_kind(_ENUM):
            for name_off, _ in self._enum_items(type_id):
                if name_off and self._raw_string(name_off) == key:
                    return True
        return False

    def typedef_proto_arity(self, name: str) -> int | None:
        """Parameters of the function type behind ``typedef <ret> (*name)(...)``.

        ``btf_trace_<event>`` takes the BPF context first, then the tracepoint's
        arguments: raw tracepoint programs may read exactly that many, minus one.
        None when there is no such typedef or it is not a function pointer.
        """
        key = _encode(name)
        for type_id in self._ids_of_kind(_TYPEDEF):
            if self._raw_string(self._record(type_id)[4]) != key:
                continue
            target = self._record(type_id)[3]
            if target and self._record(target)[0] == _PTR:
                target = self._record(target)[3]
            if target and self._record(target)[0] == _FUNC_PROTO:
                return self._record(target)[1]
            return None
        return None

    def _ids_of_kind(self, kind: int) -> Iterator[int]:
        unpack = self._u32x2.unpack_from
        data = self._data
        for type_id in range(1, len(self._offsets)):
            if (unpack(data, self._offsets[type_id])[1] >> 24) & 0x1F == kind:
                yield type_id

    def _enum_items(self, type_id: int) -> Iterator[tuple[int, int]]:
        base = self._offsets[type_id] + _RECORD_LEN
        for i in range(self._record(type_id)[1]):
            yield self._u32x2.unpack_from(self._data, base + 8 * i)

    def _names_of_kind(self, kind: int) -> frozenset[bytes]:
        """Every name of one kind, gathered in one pass on first use (~0.1 s for vmlinux)."""
        names = self._named.get(kind)
        if names is None:
            unpack = self._u32x2.unpack_from
            data, found = self._data, set()
            for off in self._offsets[1:]:
                name_off, info = unpack(data, off)
                if (info >> 24) & 0x1F == kind and name_off:
                    found.add(self._raw_string(name_off))
            names = self._named[kind] = frozenset(found)
        return names

    def __repr__(self) -> str:
        return f"<BTF {self._source}: {len(self._offsets) - 1} types>"

    # -- records and strings --------------------------------------------------------

    def _record(self, type_id: int) -> tuple[int, int, bool, int, int]:
        """(kind, vlen, kind_flag, size_or_type, name_off) of a type id."""
        if not 0 < type_id < len(self._offsets):
            raise BTFError(
                f"{self._source}: reference to type id {type_id}, "
                f"outside 1..{len(self._offsets) - 1}"
            )
        name_off, info, size_or_type = self._u32x3.unpack_from(self._data, self._offsets[type_id])
        return (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), size_or_type, name_off

    def _items(self, type_id: int) -> Iterator[tuple[int, int, int]]:
        """The 12-byte vlen items (struct/union members) following a record.

        Bounds were checked when the type section was indexed.
        """
        unpack = self._u32x3.unpack_from
        base = self._offsets[type_id] + _RECORD_LEN
        vlen = self._record(type_id)[1]
        for i in range(vlen):
            yield unpack(self._data, base + 12 * i)

    def _raw_string(self, offset: int) -> bytes:
        if offset >= self._str_len:
            raise BTFError(
                f"{self._source}: name offset {offset} is outside the string section "
                f"({self._str_len} bytes)"
            )
        start = self._str_start + offset
        end = self._data.find(b"\0", start, self._str_end)
        if end < 0:
            raise BTFError(f"{self._source}: string at offset {offset} is not NUL-terminated")
        return self._data[start:end]

    def _string(self, offset: int) -> str:
        return self._raw_string(offset).decode("utf-8", "replace")

    def _name_indexes(self) -> tuple[dict[bytes, int], dict[bytes, int]]:
        """Struct and union names -> first type id with that name, built on first use."""
        if self._structs is None or self._unions is None:
            structs: dict[bytes, int] = {}
            unions: dict[bytes, int] = {}
            for type_id in self._composite_ids:
                kind, _, _, _, name_off = self._record(type_id)
                name = self._raw_string(name_off) if name_off else b""
                if name:
                    index = structs if kind == _STRUCT else unions
                    index.setdefault(name, type_id)
            self._structs, self._unions = structs, unions
        return self._structs, self._unions

    def _composite_id(self, name: str) -> int:
        structs, unions = self._name_indexes()
        key = _encode(name)
        type_id = structs.get(key, unions.get(key))
        if type_id is None:
            known = [k.decode("utf-8", "replace") for k in (*structs, *unions)]
            raise MemberNotFound(
                f"no struct or union named {name!r} in {self._source}{_suggest(name, known)}"
            )
        return type_id

    # -- walking types --------------------------------------------------------------

    def _skip_modifiers(self, type_id: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type."""
        start = type_id
        for _ in range(_MAX_DEPTH):
            if type_id == 0:
                return 0
            kind, _, _, target, _ = self._record(type_id)
            if kind not in _MODIFIERS:
                return type_id
            type_id = target
        raise BTFError(
            f"{self._source}: typedef/qualifier chain from type [{start}] is longer than "
            f"{_MAX_DEPTH} (cyclic?)"
        )

    def _find_member(
        self, type_id: int, name: bytes, searched: set[int], depth: int
    ) -> _Found | None:
        """Depth-first search for ``name``, entering anonymous struct/union members.

        ``searched`` holds composites already searched without success in this
        lookup: the answer depends only on the type, so each is searched once,
        which bounds the work on garbage whose anonymous members fan out.
        """
        if depth > _MAX_DEPTH:
            raise BTFError(
                f"{self._source}: anonymous members nested deeper than {_MAX_DEPTH} levels "
                f"at type [{type_id}] (cyclic?)"
            )
        if type_id in searched:
            return None
        kind_flag = self._record(type_id)[2]
        for name_off, member_type, raw_offset in self._items(type_id):
            bit_offset, bitfield_size = _member_bits(kind_flag, raw_offset)
            if name_off != 0:
                if self._raw_string(name_off) == name:
                    return _Found(member_type, bit_offset, bitfield_size)
                continue
            inner = self._skip_modifiers(member_type)
            if inner == 0 or self._record(inner)[0] not in _COMPOSITES:
                continue
            hit = self._find_member(inner, name, searched, depth + 1)
            if hit is not None:
                return _Found(hit.type_id, bit_offset + hit.bit_offset, hit.bitfield_size)
        searched.add(type_id)
        return None

    def _member_names(self, type_id: int, searched: set[int], depth: int) -> Iterator[str]:
        """Every name reachable as a direct member (for "did you mean")."""
        if depth > _MAX_DEPTH or type_id in searched:
            return
        searched.add(type_id)
        for name_off, member_type, _ in self._items(type_id):
            if name_off != 0:
                yield self._string(name_off)
                continue
            inner = self._skip_modifiers(member_type)
            if inner != 0 and self._record(inner)[0] in _COMPOSITES:
                yield from self._member_names(inner, searched, depth + 1)

    def _descend(self, found: _Found, walked: str, *, next_name: str) -> int:
        """The struct/union to search next, or a clear refusal."""
        if found.bitfield_size is not None:
            raise BTFError(f"{walked} is a bitfield; it has no member {next_name!r}")
        inner = self._skip_modifiers(found.type_id)
        kind = self._record(inner)[0] if inner else 0
        if kind in _COMPOSITES:
            return inner
        shown = self._type_name(found.type_id)
        if kind == _PTR:
            target = self._skip_modifiers(self._record(inner)[3])
            hint = ""
            if target and self._record(target)[0] in _COMPOSITES:
                pointee = self._string(self._record(target)[4])
                if pointee:
                    hint = f"; look up '{pointee}.{next_name}' after reading the pointer"
            raise BTFError(
                f"{walked} is a pointer ({shown}); member paths do not descend through "
                f"pointers{hint}"
            )
        raise BTFError(
            f"{walked} is {shown}, not a struct or union; it has no member {next_name!r}"
        )

    def _missing_member_message(self, type_id: int, name: str, walked: str) -> str:
        kind, _, _, _, name_off = self._record(type_id)
        label = f"{'union' if kind == _UNION else 'struct'} {self._string(name_off) or '(anon)'}"
        where = f" (at {walked})" if "." in walked else ""
        known = list(self._member_names(type_id, set(), 0))
        return f"no member {name!r} in {label}{where} in {self._source}{_suggest(name, known)}"

    def _location(self, path: str, found: _Found, bit_offset: int) -> MemberLocation:
        bitfield_size = found.bitfield_size
        if bitfield_size is None:
            # kind_flag=0 encodes a bitfield in the member's INT type instead.
            inner = self._skip_modifiers(found.type_id)
            if inner and self._record(inner)[0] == _INT:
                _, _, _, int_size, _ = self._record(inner)
                encoding = self._int_encoding(inner)
                int_bits, int_offset = encoding & 0xFF, (encoding >> 16) & 0xFF
                if int_offset or int_bits != 8 * int_size:
                    bitfield_size = int_bits
                    bit_offset += int_offset
        size = self._sizeof(found.type_id)
        offset = bit_offset // 8
        if bitfield_size is not None and size > 0:
            unit_bits = 8 * size
            if bit_offset % unit_bits + bitfield_size <= unit_bits:
                offset = bit_offset // unit_bits * size
        return MemberLocation(
            path=path,
            offset=offset,
            size=size,
            bit_offset=bit_offset,
            bitfield_size=bitfield_size,
            type_name=self._type_name(found.type_id),
        )

    def _int_encoding(self, type_id: int) -> int:
        (encoding,) = self._u32.unpack_from(self._data, self._offsets[type_id] + _RECORD_LEN)
        return int(encoding)

    def _array(self, type_id: int) -> tuple[int, int]:
        """(element type, element count) of an ARRAY record."""
        elem, _index, nelems = self._u32x3.unpack_from(
            self._data, self._offsets[type_id] + _RECORD_LEN
        )
        return elem, nelems

    def _sizeof(self, type_id: int) -> int:
        count = 1
        start = type_id
        for _ in range(_MAX_DEPTH):
            if type_id == 0:
                raise BTFError(
                    f"{self._source}: type [{start}] resolves to void, which has no size"
                )
            kind, _, _, size_or_type, _ = self._record(type_id)
            if kind in _SIZED:
                return count * size_or_type
            if kind == _PTR:
                return count * self._pointer_bytes()
            if kind in _MODIFIERS:
                type_id = size_or_type
            elif kind == _ARRAY:
                type_id, nelems = self._array(type_id)
                count *= nelems
            else:
                raise BTFError(
                    f"{self._source}: type [{type_id}] ({_KIND_NAMES[kind]}) has no size "
                    f"(reached from type [{start}])"
                )
        raise BTFError(
            f"{self._source}: type chain from [{start}] is longer than {_MAX_DEPTH} (cyclic?)"
        )

    def _pointer_bytes(self) -> int:
        """BTF has no pointer size; like libbpf, infer it from ``long``'s size."""
        if self._pointer_size is None:
            size = struct.calcsize("P")
            for type_id in self._int_ids:
                _, _, _, int_size, name_off = self._record(type_id)
                if int_size in (4, 8) and self._raw_string(name_off) in _LONG_NAMES:
                    size = int_size
                    break
            self._pointer_size = size
        return self._pointer_size

    # -- display names --------------------------------------------------------------

    def _type_name(self, type_id: int) -> str:
        """A C-like name for messages and ``MemberLocation.type_name``."""
        return self._name(type_id, 0, [_NAME_BUDGET])

    def _name(self, type_id: int, depth: int, budget: list[int]) -> str:
        """One step of :meth:`_type_name`; ``budget`` caps the types one name visits.

        Depth beyond any real chain is a cycle (an error); running out of budget
        only happens on absurd fan-out (prototypes of prototypes) and just cuts
        the display name short.
        """
        if depth > _MAX_DEPTH:
            raise BTFError(
                f"{self._source}: type chain through [{type_id}] is deeper than {_MAX_DEPTH} "
                "(cyclic?)"
            )
        if type_id == 0:
            return "void"
        budget[0] -= 1
        if budget[0] < 0:
            return "..."
        kind, _, kind_flag, target, name_off = self._record(type_id)
        own = self._string(name_off) if name_off else ""
        if kind in (_STRUCT, _UNION, _ENUM, _ENUM64, _FWD):
            tag = _TAGS.get(kind, "union" if kind_flag else "struct")
            return f"{tag} {own or '(anon)'}"
        if kind == _PTR:
            pointee = self._skip_modifiers(target)
            if pointee and self._record(pointee)[0] == _FUNC_PROTO:
                return self._proto_name(pointee, depth, budget, declarator="(*)")
            inner = self._name(target, depth + 1, budget)
            return f"{inner}*" if inner.endswith("*") else f"{inner} *"
        if kind in (_CONST, _VOLATILE, _RESTRICT):
            qualifier = _KIND_NAMES[kind].lower()
            inner = self._name(target, depth + 1, budget)
            return f"{inner} {qualifier}" if inner.endswith("*") else f"{qualifier} {inner}"
        if kind in (_TYPE_TAG, _DECL_TAG):
            return self._name(target, depth + 1, budget)
        if kind == _ARRAY:
            elem, nelems = self._array(type_id)
            base, bracket, dims = self._name(elem, depth + 1, budget).partition("[")
            return f"{base}[{nelems}]{bracket}{dims}"
        if kind == _FUNC_PROTO:
            return self._proto_name(type_id, depth, budget, declarator="")
        return own or "(anon)"  # INT, FLOAT, TYPEDEF, FUNC, VAR, DATASEC

    def _proto_name(self, type_id: int, depth: int, budget: list[int], *, declarator: str) -> str:
        _, vlen, _, ret, _ = self._record(type_id)
        base = self._offsets[type_id] + _RECORD_LEN
        params: list[str] = []
        for i in range(vlen):  # btf_param: name_off, type
            if budget[0] <= 0:
                params.append("...")
                break
            name_off, param_type = self._u32x2.unpack_from(self._data, base + 8 * i)
            if name_off == 0 and param_type == 0:
                params.append("...")  # variadic
            else:
                params.append(self._name(param_type, depth + 1, budget))
        sep = " " if declarator else ""
        returns = self._name(ret, depth + 1, budget)
        return f"{returns}{sep}{declarator}({', '.join(params) or 'void'})"


def _member_bits(kind_flag: bool, raw_offset: int) -> tuple[int, int | None]:
    """(bit offset, bitfield size or None) from a btf_member's ``offset`` field."""
    if kind_flag:
        # offset = bitfield_size << 24 | bit_offset; bitfield_size 0 means a plain member.
        return raw_offset & 0xFFFFFF, (raw_offset >> 24) or None
    return raw_offset, None


def _encode(name: str) -> bytes:
    # surrogatepass: any str encodes, so odd input is "not found", never UnicodeEncodeError.
    return name.encode("utf-8", "surrogatepass")


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    if not close:
        return ""
    quoted = [repr(c) for c in close]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"; did you mean {listed}?"


def load_vmlinux(path: Path = VMLINUX_PATH) -> BTF:
    """The running kernel's BTF, parsed once per path and shared.

    Every probe asks for offsets at compile time; parsing ~5 MB again for each
    would be wasted. A failed load is not cached, so a later call retries.
    """
    return _load_cached(Path(path))


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path) -> BTF:
    return BTF.from_file(path)
