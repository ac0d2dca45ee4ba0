"""Tracepoint subscriptions -> BPF C and record layouts, from the events' format files.

`plan()` checks one subscription against its tracepoint's format (fields,
types, filter, limits) and lays out its record; `generate()` fills
bpf/tracepoint.bpf.c.in with every plan. The decoder
(agent/probes/tracepoints.py) reads records with the same plans, so the C
layout and the Python one come from one description.

Record layout: for `stream` the vigil_tp_header of bpf/vigil.h (48 bytes),
then every 8-byte value (integers widened to u64/s64 with their sign, string
lengths), then byte arrays each rounded up to 8 bytes: no padding anywhere,
so a `struct` format string describes it exactly.

Fields are read at the format file's offsets from the classic tracepoint
context: aligned integers by a direct load of their own width and sign,
everything else with bpf_probe_read_kernel*. Where BTF describes the
event's record (`trace_event_raw_<event>`), each offset is checked against
it; a disagreement refuses the subscription rather than reading garbage.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal

from vigil.agent.kernel import btf
from vigil.agent.kernel.compiler import bpf_dir
from vigil.agent.kernel.tracepoint_formats import FormatError, FormatField, TracepointFormat
from vigil.api import tracepoint_filter as flt
from vigil.api.probes.tracepoints import Subscription

TEMPLATE = "tracepoint.bpf.c.in"
HEADER = struct.Struct("<QQII16sII")  # struct vigil_tp_header
STACK_RECORD_MAX = 256  # larger count/histogram records live in a per-CPU map
INT64_MAX = (1 << 63) - 1

SlotKind = Literal["int", "string", "bytes", "ints", "user_string"]


class SubscriptionError(ValueError):
    """A subscription that cannot be generated for this kernel (the message says why)."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One field's place in the record."""

    field: FormatField
    kind: SlotKind
    size: int  # bytes in the record
    capacity: int = 0  # strings: the longest value the record can hold

    @property
    def cname(self) -> str:
        return f"f_{self.field.name}"

    @property
    def wide(self) -> bool:
        return self.kind == "int"


@dataclass(frozen=True, slots=True)
class Plan:
    """One subscription, checked against its format and laid out."""

    index: int
    subscription: Subscription
    format: TracepointFormat
    kept: tuple[FormatField, ...]  # fields on the events (stream)
    slots: tuple[Slot, ...]  # record order
    lengths: tuple[str, ...]  # fields with a u64 length slot (non-char __data_loc)

    @property
    def function(self) -> str:
        return f"vigil_tp{self.index}_{self.format.event}"[:120]

    @property
    def kind(self) -> str:
        return f"tracepoint.{self.format.subsystem}.{self.format.event}"

    @property
    def with_header(self) -> bool:
        return self.subscription.mode == "stream"

    def record_format(self) -> str:
        """The record as a little-endian struct format (header included in stream mode)."""
        codes = [HEADER.format[1:]] if self.with_header else []
        for slot in self.slots:
            if slot.wide:
                codes.append("q" if slot.field.signed else "Q")
        codes += ["Q"] * len(self.lengths)
        for slot in self.slots:
            if not slot.wide:
                codes.append(f"{slot.size}s")
        if not codes:
            codes = ["B7x"]
        return "<" + "".join(codes)

    @property
    def record_size(self) -> int:
        return struct.calcsize(self.record_format())


def _round8(n: int) -> int:
    return (n + 7) & ~7


def _slot(field: FormatField, sub: Subscription) -> Slot:
    string_bytes = _round8(sub.limits.string_bytes)
    if field.name in sub.read_user:
        if not field.user_string:
            raise SubscriptionError(
                f"readUser: {field.name} is {field.ctype}; only `const char *` fields are "
                "read from user memory"
            )
        return Slot(field, "user_string", string_bytes, string_bytes - 1)
    if field.kind in ("scalar", "pointer"):
        return Slot(field, "int", 8)
    if field.kind == "string":
        return Slot(field, "string", _round8(field.size), field.size)
    if field.kind in ("data_loc", "rel_loc"):
        if field.textual:
            return Slot(field, "string", string_bytes, string_bytes - 1)
        return Slot(field, "bytes", string_bytes, string_bytes)
    if field.kind == "array":
        return Slot(field, "ints", _round8(field.size), field.size)
    raise SubscriptionError(f"field {field.describe()} has a type vigil cannot read")


def _check_filter(sub: Subscription, fmt: TracepointFormat) -> flt.Node | None:
    if sub.filter is None:
        return None
    tree = flt.parse(sub.filter)
    for leaf in flt.leaves(tree):
        field = fmt.field(leaf.field)
        numeric = isinstance(leaf, flt.In) or (
            isinstance(leaf, flt.Compare) and isinstance(leaf.value, int)
        )
        if numeric and not field.numeric:
            raise SubscriptionError(
                f"filter: {leaf.field} is {field.ctype}, not a number; compare strings with "
                '== "..." or .startsWith("...")'
            )
        if not numeric and not (field.textual or field.name in sub.read_user):
            raise SubscriptionError(f"filter: {leaf.field} is {field.ctype}, not a string")
    return tree


def _check_btf(
    fmt: TracepointFormat, fields: Sequence[FormatField], reader: btf.BTF | None
) -> None:
    """Format offsets against BTF's trace_event_raw_<event>, where BTF has that struct."""
    if reader is None:
        return
    struct_name = f"trace_event_raw_{fmt.event}"
    if not reader.has_struct(struct_name):
        return  # events of a shared class (DECLARE_EVENT_CLASS) are named after the class
    for field in fields:
        member = field.name if field.kind not in ("data_loc", "rel_loc") else None
        candidates = [member] if member else [f"__data_loc_{field.name}", f"__rel_loc_{field.name}"]
        for name in candidates:
            try:
                loc = reader.member(f"{struct_name}.{name}")
            except btf.BTFError:
                continue
            if loc.offset != field.offset:
                raise SubscriptionError(
                    f"{fmt.name}.{field.name}: the format file says offset {field.offset}, "
                    f"BTF's {struct_name} says {loc.offset}; not reading it"
                )
            break


def plan(
    index: int, sub: Subscription, fmt: TracepointFormat, reader: btf.BTF | None = None
) -> Plan:
    """Check `sub` against `fmt` and lay out its record; SubscriptionError/FormatError say why."""
    try:
        own = [f for f in fmt.own_fields if f.kind != "opaque" or f.name in sub.fields]
        kept = [fmt.field(name) for name in sub.fields] if sub.fields else own
        if sub.mode != "stream":
            kept = []
        if len(kept) > sub.limits.fields:
            raise SubscriptionError(
                f"{fmt.name} has {len(kept)} fields, above limits.fields "
                f"({sub.limits.fields}); name the ones to keep in `fields`"
            )
        for name in sub.read_user:
            fmt.field(name)
        tree = _check_filter(sub, fmt)
        needed = list(kept)
        extra = [*(flt.fields(tree) if tree else []), *sub.by]
        if sub.field is not None:
            extra.append(sub.field)
        for name in extra:
            field = fmt.field(name)
            if field not in needed:
                needed.append(field)
        for name in sub.by:
            field = fmt.field(name)
            if not (field.numeric or (field.kind == "string" and field.size <= 64)):
                raise SubscriptionError(
                    f"by: {name} is {field.ctype}; count by numbers or short fixed strings"
                )
        if sub.field is not None and not fmt.field(sub.field).numeric:
            raise SubscriptionError(
                f"field: {sub.field} is {fmt.field(sub.field).ctype}, not a number"
            )
        slots = [_slot(field, sub) for field in needed]
    except FormatError as exc:
        raise SubscriptionError(str(exc)) from None
    _check_btf(fmt, needed, reader)
    ordered = [s for s in slots if s.wide] + [s for s in slots if not s.wide]
    lengths = tuple(s.field.name for s in ordered if s.kind == "bytes")
    return Plan(index, sub, fmt, tuple(kept), tuple(ordered), lengths)


# -- C ---------------------------------------------------------------------------------


def _sections() -> dict[str, Template]:
    text = (bpf_dir() / TEMPLATE).read_text()
    sections: dict[str, Template] = {}
    for chunk in text.split("/*== ")[1:]:
        name, _, body = chunk.partition(" ==*/\n")
        sections[name] = Template(body)
    return sections


_INT_TYPES = {(1, True): "s8", (1, False): "u8", (2, True): "s16", (2, False): "u16"}
_INT_TYPES |= {(4, True): "s32", (4, False): "u32", (8, True): "s64", (8, False): "u64"}


def _load(slot: Slot) -> str:
    f, dst = slot.field, f"rec->{slot.cname}"
    at = f"(const char *)ctx + {f.offset}"
    if slot.kind == "int":
        ctype = _INT_TYPES[(f.size, f.signed and f.kind == "scalar")]
        if f.offset % f.size == 0:
            return f"    {dst} = *(const {ctype} *)({at});"
        return f"    {{ {ctype} v = 0; bpf_probe_read_kernel(&v, sizeof(v), {at}); {dst} = v; }}"
    if slot.kind in ("string", "bytes") and f.kind in ("data_loc", "rel_loc"):
        macro = "VIGIL_TP_DATA_LOC" if f.kind == "data_loc" else "VIGIL_TP_REL_LOC"
        where = f"{macro}(ctx, {f.offset})"
        if slot.kind == "string":
            return f"    bpf_probe_read_kernel_str({dst}, sizeof({dst}), {where});"
        return (
            f"    {{ u32 n = VIGIL_TP_LOC_LEN(ctx, {f.offset}); "
            f"rec->len_{f.name} = n < sizeof({dst}) ? n : sizeof({dst}); "
            f"bpf_probe_read_kernel({dst}, sizeof({dst}), {where}); }}"
        )
    if slot.kind == "user_string":
        return (
            f"    bpf_probe_read_user_str({dst}, sizeof({dst}), "
            f"(const void *)*(const u64 *)({at}));"
        )
    return f"    bpf_probe_read_kernel({dst}, {f.size}, {at});"


def _record_fields(plan: Plan) -> str:
    lines = ["    struct vigil_tp_header h;"] if plan.with_header else []
    for slot in plan.slots:
        if slot.wide:
            lines.append(f"    {'s64' if slot.field.signed else 'u64'} {slot.cname};")
    lines += [f"    u64 len_{name};" for name in plan.lengths]
    for slot in plan.slots:
        if not slot.wide:
            lines.append(f"    char {slot.cname}[{slot.size}];")
    if not lines:
        lines = ["    u8 unused[8];"]
    return "\n".join(lines) + "\n"


def _int_literal(value: int, signed: bool) -> str:
    text = f"0x{value & ((1 << 64) - 1):x}ULL"
    return f"((s64){text})" if signed else text


_FOLD_BELOW = {"==": "0", "!=": "1", "<": "0", "<=": "0", ">": "1", ">=": "1"}
_FOLD_ABOVE = {"==": "0", "!=": "1", "<": "1", "<=": "1", ">": "0", ">=": "0"}


def _compare_int(slot: Slot, op: str, value: int) -> str:
    signed = slot.field.signed and slot.field.kind == "scalar"
    if not signed and value < 0:
        return _FOLD_BELOW[op]  # an unsigned field is above every negative literal
    if signed and value > INT64_MAX:
        return _FOLD_ABOVE[op]
    return f"(rec->{slot.cname} {op} {_int_literal(value, signed)})"


def _string_equals(slot: Slot, text: str, *, prefix: bool) -> str:
    data = text.encode()
    if len(data) > slot.capacity:
        return "0"  # cannot hold it: the decoded value is shorter (cut) or different
    terms = [f"rec->{slot.cname}[{i}] == {byte}" for i, byte in enumerate(data)]
    if not prefix and len(data) < slot.size:
        terms.append(f"rec->{slot.cname}[{len(data)}] == 0")
    return "(" + " && ".join(terms) + ")" if terms else "1"


def filter_c(node: flt.Node, slots: dict[str, Slot]) -> str:
    """The filter as a C expression over `rec` (the record being built)."""
    if isinstance(node, flt.Any):
        return "(" + " || ".join(filter_c(n, slots) for n in node.operands) + ")"
    if isinstance(node, flt.All):
        return "(" + " && ".join(filter_c(n, slots) for n in node.operands) + ")"
    if isinstance(node, flt.Not):
        return f"!{filter_c(node.operand, slots)}"
    slot = slots[node.field]
    if isinstance(node, flt.In):
        return "(" + " || ".join(_compare_int(slot, "==", v) for v in node.values) + ")"
    if isinstance(node, flt.Prefix):
        return _string_equals(slot, node.value, prefix=True)
    if isinstance(node.value, str):
        equal = _string_equals(slot, node.value, prefix=False)
        return equal if node.op == "==" else f"!{equal}"
    return _compare_int(slot, node.op, node.value)


def _key_fields(plan: Plan) -> tuple[str, str]:
    by = [next(s for s in plan.slots if s.field.name == name) for name in plan.subscription.by]
    wide = [s for s in by if s.wide]
    narrow = [s for s in by if not s.wide]
    fields = [f"    {'s64' if s.field.signed else 'u64'} {s.cname};" for s in wide]
    fields += [f"    char {s.cname}[{s.size}];" for s in narrow]
    copy = [f"    key.{s.cname} = rec->{s.cname};" for s in wide]
    copy += [
        f"    __builtin_memcpy(key.{s.cname}, rec->{s.cname}, sizeof(key.{s.cname}));"
        for s in narrow
    ]
    return "".join(f + "\n" for f in fields), "\n".join(copy)


def _program(plan: Plan, sections: dict[str, Template], scope_bit: int | None) -> str:
    sub = plan.subscription
    slots = {s.field.name: s for s in plan.slots}
    tree = flt.parse(sub.filter) if sub.filter else None
    values: dict[str, object] = {
        "N": plan.index,
        "TRACEPOINT": plan.format.name,
        "MODE": sub.mode,
        "FORMAT": f"events/{plan.format.subsystem}/{plan.format.event}/format",
        "RECORD_FIELDS": _record_fields(plan),
        "FUNCTION": plan.function,
        "LOADS": "\n".join(_load(s) for s in plan.slots),
        "FILTER": filter_c(tree, slots) if tree else "1",
        "RATE_LIMIT": f"{sub.rate_limit}ULL",
        "SCOPE": "" if scope_bit is None else f" || !tp_in_scope(cgroup_id, {1 << scope_bit}ULL)",
        "SCOPE_KEY": ""
        if scope_bit is None
        else f" || !tp_in_scope(key.cgroup_id, {1 << scope_bit}ULL)",
    }
    on_stack = plan.record_size <= STACK_RECORD_MAX
    if not plan.slots:
        values["RECORD_DECL"] = ""
        values["SCRATCH_DECL"] = ""
    elif on_stack:
        values["RECORD_DECL"] = f"    struct tp{plan.index}_record record = {{}}, *rec = &record;"
        values["SCRATCH_DECL"] = ""
    else:
        values["RECORD_DECL"] = (
            f"    int zero = 0;\n    struct tp{plan.index}_record *rec = "
            f"tp{plan.index}_scratch.lookup(&zero);\n\n    if (!rec)\n        return 0;"
        )
        values["SCRATCH_DECL"] = (
            f"BPF_PERCPU_ARRAY(tp{plan.index}_scratch, struct tp{plan.index}_record, 1);\n"
        )
    if sub.mode == "count":
        values["KEY_FIELDS"], values["KEY_COPY"] = _key_fields(plan)
    if sub.mode == "histogram":
        assert sub.field is not None
        slot = slots[sub.field]
        signed = slot.field.signed and slot.field.kind == "scalar"
        # Negative values count in the first bucket, as 0.
        values["VALUE"] = (
            f"rec->{slot.cname} > 0 ? (u64)rec->{slot.cname} : 0"
            if signed
            else f"rec->{slot.cname}"
        )
    return sections["record"].substitute(values) + sections[sub.mode].substitute(values)


def generate(plans: Sequence[Plan], scope_bits: dict[int, int] | None = None) -> str:
    """The probe's whole C file; `scope_bits` maps a plan index to its tp_scope bit."""
    sections = _sections()
    parts = [
        sections["module"].substitute(SUBSCRIPTIONS=max((p.index + 1 for p in plans), default=1))
    ]
    for p in plans:
        parts.append(_program(p, sections, (scope_bits or {}).get(p.index)))
    if any(p.subscription.mode != "stream" for p in plans):
        parts.append(sections["retire"].substitute())
    return "".join(parts)


# What the `retire` part reads (VIGIL_ON_CGROUP_RMDIR in vigil.h), from BTF.
RETIRE_MEMBERS = ("cgroup.kn", "cgroup.root", "cgroup_root.hierarchy_id", "kernfs_node.id")
RETIRE_FUNCTION = "vigil_tp_rmdir"


def write(plans: Sequence[Plan], directory: Path, scope_bits: dict[int, int] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tracepoints.bpf.c"
    path.write_text(generate(plans, scope_bits))
    return path
