"""A small BTF encoder for tests: build exact blobs without a compiler or pahole.

Written from the kernel's Documentation/bpf/btf.rst, independently of
``vigil.agent.kernel.btf``, so a test that encodes a layout here and reads it back
there checks the reader against the format, not against itself.

Records are kept as lists of u32 words and packed at :meth:`BTFBuilder.build`,
so one layout can be emitted in either byte order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

MAGIC = 0xEB9F
HEADER_LEN = 24

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19

INT_SIGNED = 1 << 0
INT_CHAR = 1 << 1
INT_BOOL = 1 << 2

# Words after the 12-byte btf_type: fixed trailer, then per vlen item.
TRAILER_WORDS = {INT: 1, ARRAY: 3, VAR: 1, DECL_TAG: 1}
ITEM_WORDS = {STRUCT: 3, UNION: 3, ENUM: 2, FUNC_PROTO: 2, DATASEC: 3, ENUM64: 3}

# A member: (name, type id, bit offset) or (name, type id, bit offset, bitfield bits).
Member = tuple[str, int, int] | tuple[str, int, int, int]


@dataclass
class BTFBuilder:
    """Accumulates strings and type records; type ids are handed out from 1."""

    strings: bytearray = field(default_factory=lambda: bytearray(b"\0"))
    records: list[list[int]] = field(default_factory=list)
    _string_offsets: dict[str, int] = field(default_factory=lambda: {"": 0})

    # -- strings and raw records ------------------------------------------------------

    def string(self, text: str) -> int:
        """Offset of ``text`` in the string section (added once)."""
        if text not in self._string_offsets:
            self._string_offsets[text] = len(self.strings)
            self.strings += text.encode() + b"\0"
        return self._string_offsets[text]

    def raw(
        self,
        *,
        kind: int,
        name_off: int = 0,
        vlen: int = 0,
        kind_flag: bool = False,
        size_or_type: int = 0,
        extra: Sequence[int] = (),
    ) -> int:
        """Append any record, valid or not; ``extra`` are the trailing u32 words."""
        info = (int(kind_flag) << 31) | ((kind & 0x1F) << 24) | (vlen & 0xFFFF)
        self.records.append([name_off, info, size_or_type, *extra])
        return len(self.records)

    def _named(
        self, kind: int, name: str, *, size_or_type: int, vlen: int = 0, kind_flag: bool = False,
        extra: Sequence[int] = (),
    ) -> int:  # fmt: skip
        return self.raw(
            kind=kind,
            name_off=self.string(name),
            vlen=vlen,
            kind_flag=kind_flag,
            size_or_type=size_or_type,
            extra=extra,
        )

    def retarget(self, type_id: int, target: int) -> None:
        """Point an existing PTR/TYPEDEF/qualifier at ``target`` (types that refer forward)."""
        self.records[type_id - 1][2] = target

    # -- one method per kind ----------------------------------------------------------

    def int_(
        self, name: str, size: int, *, bits: int | None = None, offset: int = 0,
        encoding: int = 0,
    ) -> int:  # fmt: skip
        nr_bits = 8 * size if bits is None else bits
        return self._named(
            INT, name, size_or_type=size, extra=[(encoding << 24) | (offset << 16) | nr_bits]
        )

    def ptr(self, target: int) -> int:
        return self.raw(kind=PTR, size_or_type=target)

    def typedef(self, name: str, target: int) -> int:
        return self._named(TYPEDEF, name, size_or_type=target)

    def const(self, target: int) -> int:
        return self.raw(kind=CONST, size_or_type=target)

    def volatile(self, target: int) -> int:
        return self.raw(kind=VOLATILE, size_or_type=target)

    def restrict(self, target: int) -> int:
        return self.raw(kind=RESTRICT, size_or_type=target)

    def type_tag(self, name: str, target: int) -> int:
        return self._named(TYPE_TAG, name, size_or_type=target)

    def array(self, elem: int, nelems: int, *, index_type: int = 0) -> int:
        return self.raw(kind=ARRAY, extra=[elem, index_type, nelems])

    def struct(
        self, name: str, size: int, members: Sequence[Member], *, union: bool = False
    ) -> int:
        """A struct (or union); kind_flag is set iff any member is a bitfield."""
        kind_flag = any(len(m) == 4 for m in members)
        words: list[int] = []
        for member in members:
            bits = member[3] if len(member) == 4 else 0
            offset = (bits << 24) | member[2] if kind_flag else member[2]
            words += [self.string(member[0]), member[1], offset]
        return self._named(
            UNION if union else STRUCT, name, size_or_type=size, vlen=len(members),
            kind_flag=kind_flag, extra=words,
        )  # fmt: skip

    def union(self, name: str, size: int, members: Sequence[Member]) -> int:
        return self.struct(name, size, members, union=True)

    def enum(self, name: str, values: Sequence[tuple[str, int]], *, size: int = 4) -> int:
        words = [w for n, v in values for w in (self.string(n), v & 0xFFFFFFFF)]
        return self._named(ENUM, name, size_or_type=size, vlen=len(values), extra=words)

    def enum64(self, name: str, values: Sequence[tuple[str, int]]) -> int:
        words = [
            w for n, v in values for w in (self.string(n), v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF)
        ]
        return self._named(ENUM64, name, size_or_type=8, vlen=len(values), extra=words)

    def fwd(self, name: str, *, union: bool = False) -> int:
        return self._named(FWD, name, size_or_type=0, kind_flag=union)

    def func_proto(self, ret: int, params: Sequence[tuple[str, int]]) -> int:
        words = [w for n, t in params for w in (self.string(n), t)]
        return self.raw(kind=FUNC_PROTO, size_or_type=ret, vlen=len(params), extra=words)

    def func(self, name: str, proto: int, *, linkage: int = 1) -> int:
        return self._named(FUNC, name, size_or_type=proto, vlen=linkage)

    def var(self, name: str, type_id: int, *, linkage: int = 1) -> int:
        return self._named(VAR, name, size_or_type=type_id, extra=[linkage])

    def datasec(self, name: str, size: int, entries: Sequence[tuple[int, int, int]]) -> int:
        words = [w for entry in entries for w in entry]  # (var type, offset, size)
        return self._named(DATASEC, name, size_or_type=size, vlen=len(entries), extra=words)

    def float_(self, name: str, size: int) -> int:
        return self._named(FLOAT, name, size_or_type=size)

    def decl_tag(self, name: str, target: int, *, component_idx: int = -1) -> int:
        return self._named(DECL_TAG, name, size_or_type=target, extra=[component_idx & 0xFFFFFFFF])

    # -- output -----------------------------------------------------------------------

    def type_section(self, *, byte_order: str = "<") -> bytes:
        words = [w for record in self.records for w in record]
        return struct.pack(f"{byte_order}{len(words)}I", *words)

    def build(
        self,
        *,
        byte_order: str = "<",
        version: int = 1,
        hdr_len: int = HEADER_LEN,
        gap: int = 0,
    ) -> bytes:
        """The blob: header, type section, ``gap`` zero bytes, string section."""
        types = self.type_section(byte_order=byte_order)
        return encode_blob(
            types, bytes(self.strings), byte_order=byte_order, version=version,
            hdr_len=hdr_len, gap=gap,
        )  # fmt: skip


def encode_blob(
    types: bytes,
    strings: bytes,
    *,
    byte_order: str = "<",
    version: int = 1,
    hdr_len: int = HEADER_LEN,
    gap: int = 0,
) -> bytes:
    """Wrap a type and a string section in a header (``hdr_len`` >= 24 pads with zeros)."""
    header = struct.pack(
        f"{byte_order}HBBIIIII",
        MAGIC, version, 0, hdr_len, 0, len(types), len(types) + gap, len(strings),
    )  # fmt: skip
    header += bytes(max(0, hdr_len - HEADER_LEN))
    return header + types + bytes(gap) + strings


@dataclass(frozen=True)
class Sections:
    """A BTF blob split into its parts, for rebuilding modified copies."""

    byte_order: str
    types: bytes
    strings: bytes

    def record_ends(self) -> Iterator[int]:
        """Byte offsets (in ``types``) where each record ends, walking by the format."""
        fmt = self.byte_order + "I"
        off = 0
        while off + 12 <= len(self.types):
            (info,) = struct.unpack_from(fmt, self.types, off + 4)
            kind = (info >> 24) & 0x1F
            words = 3 + TRAILER_WORDS.get(kind, 0) + ITEM_WORDS.get(kind, 0) * (info & 0xFFFF)
            off += 4 * words
            if off > len(self.types):
                return
            yield off


def split_blob(blob: bytes) -> Sections:
    """Undo :func:`encode_blob` for a well-formed blob (e.g. the real vmlinux)."""
    byte_order = "<" if blob[:2] == b"\x9f\xeb" else ">"
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(f"{byte_order}5I", blob, 4)
    types = blob[hdr_len + type_off : hdr_len + type_off + type_len]
    strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
    return Sections(byte_order, types, strings)
