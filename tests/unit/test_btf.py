"""The BTF reader: exact offsets on the running kernel, exact layouts on hand-built
blobs, and nothing but BTFError on garbage.

The real-kernel tests check the reader against ``bpftool btf dump file``, walked by
an independent implementation below (it parses bpftool's text, not the binary).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import btf_builder as bb
from vigil.agent.kernel import btf
from vigil.agent.kernel.btf import BTF, BTFError, MemberLocation, MemberNotFound

VMLINUX = btf.VMLINUX_PATH


def skip_or_fail(reason: str) -> NoReturn:
    """Skip loudly, or fail when CI demands the real kernel (VIGIL_REQUIRE_BPF=1).

    Meant to be replaced by a shared fixture once one exists.
    """
    if os.environ.get("VIGIL_REQUIRE_BPF") == "1":
        pytest.fail(f"{reason} (VIGIL_REQUIRE_BPF=1: this must not be skipped)")
    pytest.skip(f"NOT TESTED ON A REAL KERNEL: {reason}")


def _bpftool() -> str | None:
    found = shutil.which("bpftool")
    if found:
        return found
    return "/usr/sbin/bpftool" if os.access("/usr/sbin/bpftool", os.X_OK) else None


def _read_vmlinux() -> bytes:
    try:
        return VMLINUX.read_bytes()
    except OSError as e:
        skip_or_fail(f"cannot read {VMLINUX}: {e}")


# --------------------------------------------------------------------------------------
# An independent reading of `bpftool btf dump file` (its raw text format)
# --------------------------------------------------------------------------------------

_TYPE_LINE = re.compile(r"\[(\d+)\] (\w+) '([^']*)'(.*)")
_MEMBER_LINE = re.compile(r"\t'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?")
_ATTR = re.compile(r"(\w+)=([^\s,]+)")


@dataclass
class DumpMember:
    name: str
    type_id: int
    bits_offset: int
    bitfield_size: int | None


@dataclass
class DumpType:
    kind: str
    name: str
    attrs: dict[str, str]
    members: list[DumpMember] = field(default_factory=list)


@dataclass(frozen=True)
class Expected:
    bit_offset: int
    bitfield_size: int | None
    size: int


class Dump:
    """Types as bpftool printed them, and a walker over them."""

    _MODIFIERS = frozenset({"TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"})

    def __init__(self, text: str) -> None:
        self.types: dict[int, DumpType] = {}
        current: DumpType | None = None
        for line in text.splitlines():
            if line.startswith("["):
                m = _TYPE_LINE.fullmatch(line)
                assert m, f"unparsed bpftool line: {line!r}"
                current = DumpType(m[2], m[3], dict(_ATTR.findall(m[4])))
                self.types[int(m[1])] = current
            elif current is not None and current.kind in ("STRUCT", "UNION"):
                m = _MEMBER_LINE.fullmatch(line)
                assert m, f"unparsed bpftool member line: {line!r}"
                bits = int(m[4]) if m[4] else None
                current.members.append(DumpMember(m[1], int(m[2]), int(m[3]), bits))
        self.by_name: dict[str, int] = {}
        for kind in ("STRUCT", "UNION"):  # first struct wins, then first union
            for type_id, t in self.types.items():
                if t.kind == kind and t.name != "(anon)":
                    self.by_name.setdefault(t.name, type_id)

    def resolve(self, type_id: int) -> int:
        while type_id and self.types[type_id].kind in self._MODIFIERS:
            type_id = int(self.types[type_id].attrs["type_id"])
        return type_id

    def sizeof(self, type_id: int) -> int:
        t = self.types[type_id]
        if t.kind in self._MODIFIERS:
            return self.sizeof(int(t.attrs["type_id"]))
        if t.kind == "PTR":
            return 8
        if t.kind == "ARRAY":
            return int(t.attrs["nr_elems"]) * self.sizeof(int(t.attrs["type_id"]))
        return int(t.attrs["size"])

    def _is_composite(self, type_id: int) -> bool:
        return type_id != 0 and self.types[self.resolve(type_id)].kind in ("STRUCT", "UNION")

    def find(self, type_id: int, name: str) -> tuple[DumpMember, int] | None:
        """(member, bit offset relative to type_id), through anonymous members."""
        for m in self.types[type_id].members:
            if m.name == name:
                return m, m.bits_offset
            if m.name == "(anon)" and self._is_composite(m.type_id):
                hit = self.find(self.resolve(m.type_id), name)
                if hit:
                    return hit[0], m.bits_offset + hit[1]
        return None

    def names(self, type_id: int) -> Iterator[str]:
        for m in self.types[type_id].members:
            if m.name != "(anon)":
                yield m.name
            elif self._is_composite(m.type_id):
                yield from self.names(self.resolve(m.type_id))

    def expect(self, path: str) -> Expected:
        head, *rest = path.split(".")
        type_id = self.by_name[head]
        bits = 0
        member: DumpMember | None = None
        for name in rest:
            if member is not None:
                type_id = self.resolve(member.type_id)
                assert self.types[type_id].kind in ("STRUCT", "UNION"), path
            hit = self.find(type_id, name)
            assert hit is not None, f"{path}: bpftool dump has no {name!r}"
            member, rel = hit
            bits += rel
        assert member is not None
        return Expected(bits, member.bitfield_size, self.sizeof(member.type_id))


@pytest.fixture(scope="module")
def dump() -> Dump:
    if not VMLINUX.is_file():
        skip_or_fail(f"{VMLINUX} is missing (kernel built without CONFIG_DEBUG_INFO_BTF?)")
    tool = _bpftool()
    if tool is None:
        skip_or_fail("bpftool is not installed (Debian package 'bpftool')")
    proc = subprocess.run(
        [tool, "btf", "dump", "file", str(VMLINUX)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        skip_or_fail(f"{tool} btf dump failed ({proc.returncode}): {proc.stderr.strip()}")
    return Dump(proc.stdout)


@pytest.fixture(scope="module")
def kernel() -> BTF:
    if not VMLINUX.is_file():
        skip_or_fail(f"{VMLINUX} is missing (kernel built without CONFIG_DEBUG_INFO_BTF?)")
    return btf.load_vmlinux()


# --------------------------------------------------------------------------------------
# The running kernel
# --------------------------------------------------------------------------------------

KERNEL_MEMBERS = [
    "task_struct.pid",
    "task_struct.tgid",
    "task_struct.real_parent",
    "task_struct.exit_code",
    "task_struct.mm",
    "task_struct.signal",
    "task_struct.start_time",
    "task_struct.comm",
    "task_struct.__state",
    "mm_struct.arg_start",  # mm_struct wraps its fields in an anonymous struct
    "mm_struct.arg_end",
    "signal_struct.live",
    "sock.__sk_common.skc_family",
    "sock.__sk_common.skc_state",
    "sock.__sk_common.skc_daddr",  # anonymous union -> anonymous struct
    "sock.__sk_common.skc_dport",  # anonymous union -> anonymous struct
    "tcp_sock.bytes_received",
    "tcp_sock.bytes_acked",
    "sk_buff.next",  # anonymous union -> anonymous struct
    "sk_buff.len",
    # bitfields
    "task_struct.sched_reset_on_fork",
    "sk_buff.pkt_type",  # a bitfield inside struct_group()'s anonymous union/struct
    "sk_buff.cloned",
]


@pytest.mark.parametrize("path", KERNEL_MEMBERS)
def test_kernel_member_matches_bpftool(kernel: BTF, dump: Dump, path: str) -> None:
    got = kernel.member(path)
    want = dump.expect(path)
    assert got.path == path
    assert got.bit_offset == want.bit_offset
    assert got.bitfield_size == want.bitfield_size
    assert got.size == want.size
    _assert_offset_consistent(got)


def _assert_offset_consistent(loc: MemberLocation) -> None:
    if loc.bitfield_size is None:
        assert loc.bit_offset % 8 == 0
        assert loc.offset == loc.bit_offset // 8
    else:  # reading `size` bytes at `offset` covers the whole bitfield
        assert loc.offset % loc.size == 0
        assert loc.offset * 8 <= loc.bit_offset
        assert loc.bit_offset + loc.bitfield_size <= (loc.offset + loc.size) * 8


def test_kernel_bitfields_are_reported(kernel: BTF) -> None:
    loc = kernel.member("task_struct.sched_reset_on_fork")
    assert loc.is_bitfield
    assert loc.bitfield_size == 1
    assert not kernel.member("task_struct.pid").is_bitfield


@pytest.mark.parametrize("struct_name", ["task_struct", "sock_common", "sk_buff", "mm_struct"])
def test_kernel_every_member_of_struct_matches_bpftool(
    kernel: BTF, dump: Dump, struct_name: str
) -> None:
    """Every name reachable in the struct, not just the ones probes use today."""
    type_id = dump.by_name[struct_name]
    names = list(dump.names(type_id))
    assert len(names) > 20
    for name in names:
        path = f"{struct_name}.{name}"
        got = kernel.member(path)
        want = dump.expect(path)
        assert (got.bit_offset, got.bitfield_size, got.size) == (
            want.bit_offset,
            want.bitfield_size,
            want.size,
        ), path
        _assert_offset_consistent(got)
    assert kernel.struct_size(struct_name) == int(dump.types[type_id].attrs["size"])


def test_kernel_type_names(kernel: BTF) -> None:
    assert kernel.member("task_struct.pid").type_name == "pid_t"
    assert kernel.member("task_struct.real_parent").type_name == "struct task_struct *"
    assert kernel.member("task_struct.mm").type_name == "struct mm_struct *"
    assert kernel.member("task_struct.comm").type_name == "char[16]"
    assert kernel.member("tcp_sock.bytes_received").type_name == "u64"


def test_kernel_errors_name_the_problem(kernel: BTF) -> None:
    with pytest.raises(MemberNotFound, match=r"did you mean 'task_struct'"):
        kernel.member("task_strct.pid")
    with pytest.raises(MemberNotFound, match=r"did you mean 'tgid'"):
        kernel.member("task_struct.tgdi")
    with pytest.raises(BTFError, match=r"real_parent is a pointer") as info:
        kernel.member("task_struct.real_parent.tgid")
    assert not isinstance(info.value, MemberNotFound)
    assert kernel.has_struct("tcp_sock")
    assert not kernel.has_struct("no_such_struct_anywhere")


def test_load_vmlinux_is_cached(kernel: BTF) -> None:
    assert btf.load_vmlinux() is kernel
    assert btf.load_vmlinux(Path(str(VMLINUX))) is kernel


# --------------------------------------------------------------------------------------
# Hand-built BTF
# --------------------------------------------------------------------------------------


def build_sample(*, long_size: int = 8) -> bb.BTFBuilder:
    """A layout that touches every kind and every path rule.

    struct task {                                   // 96 bytes
        volatile unsigned char state;               //  0
        pid_t pid;                                  //  4
        const pid_t tgid;                           //  8
        union { u64 both; struct { u32 lo, hi; }; };// 16 (anonymous union/struct)
        struct task *parent;                        // 24
        unsigned char comm[16];                     // 32
        point_t where;                              // 48 (typedef of struct point)
        int grid[2][3];                             // 56
        struct flags bits;                          // 80 (bitfields, kind_flag)
        int (*cb)(struct task *, ...);              // 88
    };
    """
    b = bb.BTFBuilder()
    # Kinds the reader must step over without using them.
    b.enum("color", [("RED", 0), ("GREEN", 1)])
    b.enum64("big", [("HUGE", 1 << 40)])
    b.fwd("later")
    b.fwd("later_union", union=True)
    b.float_("double", 8)
    u32 = b.int_("unsigned int", 4)
    s32 = b.int_("int", 4, encoding=bb.INT_SIGNED)
    u8 = b.int_("unsigned char", 1)
    u64 = b.int_("long long unsigned int", 8)
    b.int_("long int", long_size, encoding=bb.INT_SIGNED)
    pid_t = b.typedef("pid_t", s32)
    const_pid = b.const(pid_t)
    vol_u8 = b.volatile(u8)
    b.restrict(b.ptr(u8))
    task_ptr = b.ptr(0)  # retargeted to struct task below
    proto = b.func_proto(s32, [("t", task_ptr), ("", 0)])
    b.func("do_it", proto)
    var = b.var("counter", u64)
    b.datasec(".data", 8, [(var, 0, 8)])
    b.decl_tag("tagged", u32)
    cb = b.ptr(b.type_tag("user", proto))

    inner = b.struct("", 8, [("lo", u32, 0), ("hi", u32, 32)])
    anon_union = b.union("", 8, [("both", u64, 0), ("", inner, 0)])
    point = b.struct("point", 8, [("x", s32, 0), ("y", s32, 32)])
    point_t = b.typedef("point_t", b.const(point))
    flags = b.struct("flags", 4, [("a", u32, 0, 1), ("b", u32, 1, 3), ("c", u32, 4, 28)])
    comm = b.array(u8, 16, index_type=u32)
    grid = b.array(b.array(s32, 3), 2)
    task = b.struct(
        "task",
        96,
        [
            ("state", vol_u8, 0),
            ("pid", pid_t, 32),
            ("tgid", const_pid, 64),
            ("", anon_union, 128),
            ("parent", task_ptr, 192),
            ("comm", comm, 256),
            ("where", point_t, 384),
            ("grid", grid, 448),
            ("bits", flags, 640),
            ("cb", cb, 704),
        ],
    )
    b.retarget(task_ptr, task)
    # kind_flag bitfields of several widths, one straddling its storage unit (packed).
    b.struct(
        "bf",
        16,
        [("a", u32, 0, 1), ("b", u8, 40, 2), ("e", u32, 62, 4), ("plain", u32, 96)],
    )
    # kind_flag=0 bitfields, encoded in the INT type (older pahole).
    b.struct(
        "oldbf",
        8,
        [("x", b.int_("unsigned int", 4, bits=3), 5), ("y", b.int_("u", 4, bits=4, offset=2), 32)],
    )
    # Name clashes: the first struct wins over an earlier union of the same name.
    b.union("dup", 4, [("from_union", u32, 0)])
    b.struct("dup", 4, [("from_first_struct", u32, 0)])
    b.struct("dup", 4, [("from_second_struct", u32, 0)])
    b.union("only_union", 8, [("u", u64, 0)])
    b.struct("last", 4, [("ok", u32, 0)])  # after every other kind: the walk stayed aligned
    return b


SAMPLE = build_sample().build()


@pytest.fixture(params=["<", ">"], ids=["little-endian", "big-endian"])
def sample(request: pytest.FixtureRequest) -> BTF:
    return BTF.from_bytes(build_sample().build(byte_order=request.param))


@pytest.mark.parametrize(
    ("path", "offset", "size", "type_name"),
    [
        ("task.state", 0, 1, "volatile unsigned char"),
        ("task.pid", 4, 4, "pid_t"),
        ("task.tgid", 8, 4, "const pid_t"),
        ("task.both", 16, 8, "long long unsigned int"),
        ("task.lo", 16, 4, "unsigned int"),
        ("task.hi", 20, 4, "unsigned int"),
        ("task.parent", 24, 8, "struct task *"),
        ("task.comm", 32, 16, "unsigned char[16]"),
        ("task.where", 48, 8, "point_t"),
        ("task.where.x", 48, 4, "int"),
        ("task.where.y", 52, 4, "int"),
        ("task.grid", 56, 24, "int[2][3]"),
        ("task.bits", 80, 4, "struct flags"),
        ("task.cb", 88, 8, "int (*)(struct task *, ...)"),
        ("bf.plain", 12, 4, "unsigned int"),
        ("last.ok", 0, 4, "unsigned int"),
        ("only_union.u", 0, 8, "long long unsigned int"),
    ],
)
def test_sample_offsets(sample: BTF, path: str, offset: int, size: int, type_name: str) -> None:
    assert sample.member(path) == MemberLocation(
        path=path,
        offset=offset,
        size=size,
        bit_offset=offset * 8,
        bitfield_size=None,
        type_name=type_name,
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [  # (offset, size, bit_offset, bitfield_size)
        ("task.bits.a", (80, 4, 640, 1)),
        ("task.bits.b", (80, 4, 641, 3)),
        ("task.bits.c", (80, 4, 644, 28)),
        ("bf.a", (0, 4, 0, 1)),
        ("bf.b", (5, 1, 40, 2)),
        ("bf.e", (7, 4, 62, 4)),  # straddles the u32 at 4..8: falls back to bit_offset // 8
        ("oldbf.x", (0, 4, 5, 3)),
        ("oldbf.y", (4, 4, 34, 4)),
    ],
)
def test_sample_bitfields(sample: BTF, path: str, expected: tuple[int, int, int, int]) -> None:
    loc = sample.member(path)
    assert loc.is_bitfield
    assert (loc.offset, loc.size, loc.bit_offset, loc.bitfield_size) == expected


def test_sample_sizes_and_names(sample: BTF) -> None:
    assert sample.struct_size("task") == 96
    assert sample.struct_size("only_union") == 8
    assert sample.has_struct("task")
    assert sample.has_struct("only_union")
    assert not sample.has_struct("later")  # a FWD is not a definition
    assert not sample.has_struct("")
    assert sample.member("dup.from_first_struct").offset == 0
    with pytest.raises(MemberNotFound):
        sample.member("dup.from_union")


def test_pointer_size_follows_long() -> None:
    blob = BTF.from_bytes(build_sample(long_size=4).build())
    assert blob.member("task.parent").size == 4


def test_sample_refuses_to_descend_a_pointer(sample: BTF) -> None:
    with pytest.raises(BTFError, match=r"task\.parent is a pointer \(struct task \*\)") as info:
        sample.member("task.parent.pid")
    assert not isinstance(info.value, MemberNotFound)
    assert "'task.pid'" in str(info.value)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("task.pid.x", r"task\.pid is pid_t, not a struct or union"),
        ("task.bits.a.z", r"task\.bits\.a is a bitfield"),
        ("task.cb.x", r"task\.cb is a pointer \(int \(\*\)\(struct task \*, \.\.\.\)\)"),
        ("task", r"invalid member path 'task'"),
        ("task.", r"invalid member path"),
        (".pid", r"invalid member path"),
    ],
)
def test_sample_path_errors(sample: BTF, path: str, message: str) -> None:
    with pytest.raises(BTFError, match=message):
        sample.member(path)


def test_sample_unknown_names_suggest(sample: BTF) -> None:
    with pytest.raises(MemberNotFound, match=r"no struct or union named 'tsak'.*'task'"):
        sample.member("tsak.pid")
    with pytest.raises(MemberNotFound, match=r"no member 'pdi' in struct task.*'pid'"):
        sample.member("task.pdi")
    with pytest.raises(MemberNotFound, match=r"no member 'hii' in struct task.*'hi'"):
        sample.member("task.hii")  # names inside anonymous members are suggested too
    with pytest.raises(MemberNotFound, match=r"no member 'z' in struct point \(at task\.where\)"):
        sample.member("task.where.z")
    with pytest.raises(MemberNotFound):
        sample.struct_size("nope")
    with pytest.raises(MemberNotFound):
        sample.member("task.\udcff")  # lone surrogate: not found, not UnicodeEncodeError


def test_header_variants_parse() -> None:
    base = BTF.from_bytes(SAMPLE).member("task.hi")
    assert BTF.from_bytes(build_sample().build(hdr_len=32, gap=8)).member("task.hi") == base


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", r"too short"),
        (b"\x00" * 24, r"not BTF \(magic 0x0000"),
        (bb.BTFBuilder().build(version=2), r"version 2"),
        (bb.BTFBuilder().build(hdr_len=16), r"header length 16"),
        (SAMPLE[:-1], r"string section .* runs past the end"),
        (SAMPLE[:100], r"type section .* runs past the end"),
        (bb.encode_blob(b"", b"x\0"), r"does not start with an empty string"),
        (bb.encode_blob(b"", b""), r"does not start with an empty string"),
        (bb.encode_blob(struct.pack("<3I", 0, 20 << 24, 0), b"\0"), r"unknown kind 20"),
        (bb.encode_blob(struct.pack("<3I", 0, 0, 0), b"\0"), r"unknown kind 0"),
        (bb.encode_blob(struct.pack("<3I", 0, 1 << 24, 4), b"\0"), r"type \[1\] \(INT"),
        (bb.encode_blob(struct.pack("<2I", 0, 0), b"\0"), r"ends inside type \[1\]"),
    ],
)
def test_malformed_headers_and_sections(blob: bytes, message: str) -> None:
    with pytest.raises(BTFError, match=message):
        BTF.from_bytes(blob)


def test_cycles_and_bad_references_are_btf_errors() -> None:
    b = bb.BTFBuilder()
    u32 = b.int_("unsigned int", 4)
    loop = b.typedef("loop", 0)
    b.retarget(loop, loop)  # typedef loop loop;
    ptr_loop = b.ptr(0)
    b.retarget(ptr_loop, ptr_loop)  # a pointer to itself
    selfish = b.struct("selfish", 4, [("x", u32, 0)])
    b.records[selfish - 1] += [0, selfish, 0]  # an anonymous member of its own type
    b.records[selfish - 1][1] += 1  # vlen 2
    b.struct(
        "s",
        16,
        [
            ("looped", loop, 0),
            ("ptr", ptr_loop, 0),
            ("dangling", 999, 0),
            ("void_member", 0, 0),
        ],
    )
    blob = BTF.from_bytes(b.build())
    with pytest.raises(BTFError, match=r"cyclic"):
        blob.member("s.looped")
    with pytest.raises(BTFError, match=r"cyclic"):
        blob.member("s.ptr")  # its size is fine; its display name loops
    with pytest.raises(BTFError, match=r"type id 999"):
        blob.member("s.dangling")
    with pytest.raises(BTFError, match=r"void"):
        blob.member("s.void_member")
    assert blob.member("selfish.x").offset == 0  # found before the cycle is entered
    with pytest.raises(BTFError, match=r"cyclic"):
        blob.member("selfish.y")


def test_bad_strings_are_btf_errors() -> None:
    b = bb.BTFBuilder()
    b.struct("a", 4, [("x", 999, 0)])
    b.raw(kind=bb.STRUCT, name_off=10_000, size_or_type=4)  # a name past the strings
    with pytest.raises(BTFError, match=r"name offset 10000"):
        BTF.from_bytes(b.build()).member("a.x")  # the name index is built lazily

    b = bb.BTFBuilder()
    b.struct("a", 4, [])
    raw = b.build()
    with pytest.raises(BTFError, match=r"not NUL-terminated"):
        BTF.from_bytes(raw[:-1] + b"x").member("a.b")

    b = bb.BTFBuilder()
    b.struct("a", 4, [])
    b.raw(kind=bb.STRUCT, name_off=b.string("cafX"), size_or_type=4)
    raw = b.build().replace(b"cafX\0", b"caf\xe9\0")  # Latin-1, not UTF-8
    with pytest.raises(MemberNotFound, match=r"no struct or union named 'cafe'"):
        BTF.from_bytes(raw).member("cafe.x")


def test_from_file_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.btf"
    with pytest.raises(BTFError, match=re.escape(str(missing))):
        BTF.from_file(missing)
    with pytest.raises(BTFError, match=re.escape(str(tmp_path))):
        BTF.from_file(tmp_path)
    bad = tmp_path / "bad.btf"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(BTFError, match=re.escape(str(bad))):
        BTF.from_file(bad)


def test_load_vmlinux_caches_per_path(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(SAMPLE)
    first = btf.load_vmlinux(path)
    assert btf.load_vmlinux(path) is first
    assert first.member("task.pid").offset == 4


def test_every_truncation_of_the_sample_is_a_btf_error() -> None:
    for n in range(len(SAMPLE)):
        with pytest.raises(BTFError):
            BTF.from_bytes(SAMPLE[:n])


# --------------------------------------------------------------------------------------
# Fuzzing: garbage in, BTFError (or an answer) out
# --------------------------------------------------------------------------------------

FUZZ_PATHS = [
    "task.pid",
    "task.lo",
    "task.where.y",
    "task.parent.pid",
    "task.bits.c",
    "task.cb",
    "bf.e",
    "oldbf.y",
    "last.ok",
    "task_struct.pid",
    "task_struct.real_parent",
    "list_head.next",
    "sock.__sk_common.skc_family",
    "a.b",
    "a.b.c",
    "b.a",
]


def exercise(data: bytes) -> None:
    """Parse and query; only BTFError may come out."""
    try:
        parsed = BTF.from_bytes(data)
    except BTFError:
        return
    repr(parsed)
    for path in FUZZ_PATHS:
        try:
            loc = parsed.member(path)
        except BTFError:
            continue
        assert loc.path == path
        assert isinstance(loc.type_name, str)
    for name in ("task", "a", "task_struct"):
        with contextlib.suppress(BTFError):
            parsed.struct_size(name)
        with contextlib.suppress(BTFError):
            parsed.has_struct(name)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


SAMPLE_BY_ORDER = {order: build_sample().build(byte_order=order) for order in "<>"}
SAMPLE_STRINGS_LEN = len(build_sample().strings)


@FUZZ
@given(st.data())
def test_fuzz_sample_mutations(data: st.DataObject) -> None:
    blob = bytearray(SAMPLE_BY_ORDER[data.draw(st.sampled_from("<>"))])
    header_and_types = len(blob) - SAMPLE_STRINGS_LEN
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, header_and_types - 1))
        if data.draw(st.booleans()):
            blob[pos] = data.draw(st.integers(0, 255))
        else:
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    exercise(bytes(blob))


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(garbage: bytes) -> None:
    exercise(garbage)
    exercise(b"\x9f\xeb\x01\x00" + garbage)  # past the magic check
    exercise(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(garbage), 0, 1) + garbage)


_WORD = st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1))


@st.composite
def random_type_sections(draw: st.DrawFn) -> bytes:
    """Well-framed records with arbitrary contents: cycles, dangling ids, odd kinds."""
    b = bb.BTFBuilder()
    names = [b.string(n) for n in ("a", "b", "c", "task", "pid")]
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.integers(1, 19))
        vlen = draw(st.integers(0, 4))
        words = bb.TRAILER_WORDS.get(kind, 0) + bb.ITEM_WORDS.get(kind, 0) * vlen
        extra = [
            draw(st.one_of(st.sampled_from(names), _WORD)) if i % 3 == 0 else draw(_WORD)
            for i in range(words)
        ]
        b.raw(
            kind=kind,
            name_off=draw(st.one_of(st.sampled_from(names), _WORD)),
            vlen=vlen,
            kind_flag=draw(st.booleans()),
            size_or_type=draw(_WORD),
            extra=extra,
        )
    return b.build(byte_order=draw(st.sampled_from("<>")))


@FUZZ
@given(random_type_sections())
def test_fuzz_random_type_graphs(blob: bytes) -> None:
    exercise(blob)


@pytest.fixture(scope="module")
def vmlinux_head() -> bb.Sections:
    """The real vmlinux cut to its first ~64 KiB of types (whole records), all strings."""
    sections = bb.split_blob(_read_vmlinux())
    cut = 0
    for end in sections.record_ends():
        if end > 64 * 1024:
            break
        cut = end
    return bb.Sections(sections.byte_order, sections.types[:cut], sections.strings)


def test_vmlinux_head_is_usable(vmlinux_head: bb.Sections) -> None:
    head = BTF.from_bytes(bb.encode_blob(vmlinux_head.types, vmlinux_head.strings))
    assert head.has_struct("task_struct")
    assert head.member("task_struct.pid") == btf.load_vmlinux().member("task_struct.pid")


@FUZZ
@given(st.data())
def test_fuzz_vmlinux_prefixes(vmlinux_head: bb.Sections, data: st.DataObject) -> None:
    raw = bb.encode_blob(vmlinux_head.types, vmlinux_head.strings)
    # A raw prefix of the file (its header claims more than is there) ...
    exercise(raw[: data.draw(st.integers(0, 64 * 1024))])
    # ... and a type section cut anywhere, with a header that agrees.
    cut = data.draw(st.integers(0, len(vmlinux_head.types)))
    exercise(bb.encode_blob(vmlinux_head.types[:cut], vmlinux_head.strings))


@FUZZ
@given(st.data())
def test_fuzz_vmlinux_mutations(vmlinux_head: bb.Sections, data: st.DataObject) -> None:
    types = bytearray(vmlinux_head.types)
    for _ in range(data.draw(st.integers(1, 16))):
        pos = data.draw(st.integers(0, len(types) - 1))
        if data.draw(st.booleans()):
            types[pos] = data.draw(st.integers(0, 255))
        else:
            types[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    blob = bytearray(bb.encode_blob(bytes(types), vmlinux_head.strings))
    if data.draw(st.booleans()):  # and sometimes the header too
        blob[data.draw(st.integers(0, 23))] = data.draw(st.integers(0, 255))
    exercise(bytes(blob))
