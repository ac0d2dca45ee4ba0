"""The tracepoint generator and filter compiler, checked by running their C.

Random format files (integers of every width and sign, pointers, fixed char
and integer arrays, __data_loc strings, aligned or not) and random records
go through the generator's loads and the filter's C expression, compiled by
the host's C compiler with the BPF helpers replaced by plain copies. What
comes out must decode (with the probe's own decoder) to the values the
format says the record holds, and the C filter's verdict must equal CEL's on
that decoded record.
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.agent.kernel.compiler import bpf_dir
from vigil.agent.kernel.tracepoint_formats import FormatField, TracepointFormat, parse_format
from vigil.agent.probes import tracepoint_gen
from vigil.agent.probes.tracepoints import _Decoder
from vigil.api import tracepoint_filter as flt
from vigil.api.cel_ext import cel
from vigil.api.probes.tracepoints import Subscription

CC = shutil.which("gcc") or "gcc"  # installed by scripts/setup.sh

_INTS = {
    (1, True): "signed char",
    (1, False): "unsigned char",
    (2, True): "short",
    (2, False): "unsigned short",
    (4, True): "int",
    (4, False): "u32",
    (8, True): "long",
    (8, False): "u64",
}
STRING_BYTES = 24
FILTERS = 16  # random filters per random format, all over the same records


@dataclass
class Spec:
    kind: str  # int, ptr, chars, bytes, u32s, loc
    size: int
    signed: bool = False


def _vigil_h_parts() -> str:
    """The header struct and __data_loc macros, taken from bpf/vigil.h itself."""
    text = (bpf_dir() / "vigil.h").read_text()
    header = re.search(r"struct vigil_tp_header \{.*?\};", text, re.S)
    assert header is not None
    macros = re.findall(r"#define VIGIL_TP_\w+\(.*?(?<!\\)\n", text, re.S)
    assert len(macros) == 3
    return header.group(0) + "\n" + "".join(macros)


SHIM = """
#include <stdint.h>
#include <stdio.h>
#include <string.h>
typedef uint8_t u8; typedef uint16_t u16; typedef uint32_t u32; typedef uint64_t u64;
typedef int8_t s8; typedef int16_t s16; typedef int32_t s32; typedef int64_t s64;
#define VIGIL_COMM_LEN 16
static long bpf_probe_read_kernel(void *dst, u32 size, const void *src)
{ memcpy(dst, src, size); return 0; }
static long bpf_probe_read_kernel_str(void *dst, u32 size, const void *src)
{ strncpy(dst, src, size - 1); ((char *)dst)[size - 1] = 0; return 0; }
""" + _vigil_h_parts()


def _format_text(specs: list[Spec], packed: bool) -> tuple[str, int]:
    lines = [
        "name: random_event",
        "ID: 1",
        "format:",
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;",
        "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;",
        "",
    ]
    offset = 8
    for i, spec in enumerate(specs):
        align = 1 if packed or spec.kind in ("chars", "bytes") else min(spec.size, 8)
        if spec.kind == "u32s":
            align = 1 if packed else 4
        offset = (offset + align - 1) // align * align
        name = f"f{i}"
        if spec.kind == "int":
            decl, size = f"{_INTS[(spec.size, spec.signed)]} {name}", spec.size
        elif spec.kind == "ptr":
            decl, size = f"const void * {name}", 8
        elif spec.kind == "chars":
            decl, size = f"char {name}[{spec.size}]", spec.size
        elif spec.kind == "bytes":
            decl, size = f"u8 {name}[{spec.size}]", spec.size
        elif spec.kind == "u32s":
            decl, size = f"u32 {name}[{spec.size}]", spec.size * 4
        else:
            decl, size = f"__data_loc char[] {name}", 4
        signed = int(spec.kind == "int" and spec.signed)
        lines.append(f"\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:{signed};")
        offset += size
    return "\n".join(lines) + '\n\nprint fmt: ""\n', offset


def _record(fmt: TracepointFormat, fixed: int, rng: random.Random) -> tuple[bytes, dict[str, Any]]:
    """Raw tracepoint record bytes and the value each field holds in it."""
    raw = bytearray(rng.randbytes(fixed))
    data = bytearray()
    values: dict[str, Any] = {}
    for field in fmt.own_fields:
        at = field.offset
        if field.kind in ("scalar", "pointer"):
            limit = 1 << (8 * field.size)
            value = rng.choice([0, 1, 9, limit - 1, rng.randrange(limit), rng.randrange(256)])
            raw[at : at + field.size] = value.to_bytes(field.size, "little")
            if field.signed and field.kind == "scalar" and value >= limit // 2:
                value -= limit
            values[field.name] = value
        elif field.kind == "string":
            text = rng.choice(["", "ba", "bash", "x" * field.size, "ab"])[: field.size]
            raw[at : at + field.size] = text.encode().ljust(field.size, b"\0")
            values[field.name] = text
        elif field.kind == "array":
            chunk = rng.randbytes(field.size)
            raw[at : at + field.size] = chunk
            if field.element_size == 1:
                values[field.name] = chunk.hex()
            else:
                values[field.name] = [str(v) for v in struct.unpack(f"<{field.size // 4}I", chunk)]
        else:
            text = rng.choice(["", "/tmp/x", "/usr/bin/bash", "y" * 40])
            where = fixed + len(data)
            data += text.encode() + b"\0"
            raw[at : at + 4] = ((len(text) + 1) << 16 | where).to_bytes(4, "little")
            values[field.name] = text[: STRING_BYTES - 1]
    return bytes(raw + data), values


def _filter_text(
    fmt: TracepointFormat, rng: random.Random, values: dict[str, Any], depth: int = 0
) -> str:
    if depth < 2 and rng.random() < 0.5:
        op = rng.choice(["&&", "||"])
        parts = [_filter_text(fmt, rng, values, depth + 1) for _ in range(rng.randint(2, 3))]
        text = f" {op} ".join(f"({p})" if rng.random() < 0.7 else p for p in parts)
        return f"!({text})" if rng.random() < 0.2 else f"({text})"
    usable = [f for f in fmt.own_fields if f.numeric or f.textual]
    field = rng.choice(usable)
    if field.numeric:
        near = values.get(field.name, 0)
        literal = rng.choice([near, near + 1, near - 1, 0, -1, 9, -(1 << 63), (1 << 63) - 1])
        literal = max(-(1 << 63), min((1 << 63) - 1, literal))
        if rng.random() < 0.2:
            items = ", ".join(str(rng.choice([literal, 1, 2])) for _ in range(3))
            return f"{field.name} in [{items}]"
        return f"{field.name} {rng.choice(['==', '!=', '<', '<=', '>', '>='])} {literal}"
    text = str(values.get(field.name, ""))
    literal = rng.choice([text, text[:2], text + "z", "", "ba", "bash"])
    if rng.random() < 0.4:
        return f'{field.name}.startsWith("{literal}")'
    return f'{field.name} {rng.choice(["==", "!="])} "{literal}"'


def _harness(plan: tracepoint_gen.Plan, filters_c: list[str], records: list[bytes]) -> str:
    loads = "\n".join(tracepoint_gen._load(slot) for slot in plan.slots)
    fields = tracepoint_gen._record_fields(plan)
    blobs = ",\n".join("{" + ",".join(str(b) for b in r) + "}" for r in records)
    width = max(len(r) for r in records)
    verdicts = "\n".join(f"        putchar(({c}) ? '1' : '0');" for c in filters_c)
    return f"""{SHIM}
struct tp0_record {{
{fields}}};
static const unsigned char records[{len(records)}][{width}] = {{ {blobs} }};
int main(void)
{{
    for (int i = 0; i < {len(records)}; i++) {{
        struct tp0_record record;
        struct tp0_record *rec = &record;
        const void *ctx = records[i];
        memset(&record, 0, sizeof(record));
{loads}
{verdicts}
        fwrite(&record, sizeof(record), 1, stdout);
    }}
    return 0;
}}
"""


SPEC = st.one_of(
    st.builds(Spec, st.just("int"), st.sampled_from([1, 2, 4, 8]), st.booleans()),
    st.builds(Spec, st.just("ptr"), st.just(8)),
    st.builds(Spec, st.just("chars"), st.integers(1, 20)),
    st.builds(Spec, st.just("bytes"), st.integers(1, 12)),
    st.builds(Spec, st.just("u32s"), st.integers(1, 4)),
    st.builds(Spec, st.just("loc"), st.just(4)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(SPEC, min_size=1, max_size=8),
    packed=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_generated_loads_decode_and_filters_agree_with_cel(
    tmp_path_factory: pytest.TempPathFactory, specs: list[Spec], packed: bool, seed: int
) -> None:
    rng = random.Random(seed)
    text, fixed = _format_text([Spec("int", 4, True), *specs], packed)  # a field to filter on
    fmt = parse_format(text)
    fmt = TracepointFormat("random", fmt.event, fmt.id, fmt.fields)
    samples = [_record(fmt, fixed, rng) for _ in range(24)]
    filters = [_filter_text(fmt, rng, samples[i % 4][1]) for i in range(FILTERS)]
    sub = Subscription.model_validate(
        {"tracepoint": "random:random_event", "limits": {"stringBytes": STRING_BYTES}}
    )
    plan = tracepoint_gen.plan(0, sub, fmt)  # every field kept, hence loaded
    slots = {s.field.name: s for s in plan.slots}
    expressions = [tracepoint_gen.filter_c(flt.parse(text), slots) for text in filters]
    source = tmp_path_factory.mktemp("harness") / "harness.c"
    source.write_text(_harness(plan, expressions, [raw for raw, _ in samples]))
    binary = source.with_suffix("")
    subprocess.run([CC, "-O1", "-w", "-o", str(binary), str(source)], check=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True).stdout

    decoder = _Decoder(plan)
    size = decoder.struct.size
    step = size + FILTERS
    assert len(out) == len(samples) * step  # C's sizeof == the decoder's layout
    programs = [cel.compile(text) for text in filters]
    for i, (_, expected) in enumerate(samples):
        verdicts = out[i * step : i * step + FILTERS]
        _, attrs = decoder.attributes(out[i * step + FILTERS : (i + 1) * step])
        decoded = {
            k.removeprefix("vigil.tracepoint."): v
            for k, v in attrs.items()
            if k.startswith("vigil.tracepoint.")
        }
        assert decoded == expected, f"record {i}"
        context = cel.Context()
        for name, value in decoded.items():
            context.add_variable(name, value)
        for text, program, verdict in zip(filters, programs, verdicts, strict=True):
            assert bool(program.execute(context)) == (verdict == ord("1")), (text, decoded)


def test_format_file_kinds() -> None:
    text = (
        "name: sched_process_exec\nID: 9\nformat:\n"
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n"
        "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n"
        "\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n"
        "\tfield:const char * name;\toffset:16;\tsize:8;\tsigned:0;\n"
        "\tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;\n"
        "\tfield:__u8 saddr[4];\toffset:40;\tsize:4;\tsigned:0;\n"
        "\tfield:unsigned long args[6];\toffset:48;\tsize:48;\tsigned:0;\n"
        "\tfield:struct foo bar;\toffset:96;\tsize:12;\tsigned:0;\n"
    )
    fmt = parse_format(text)
    kinds = {f.name: (f.kind, f.ctype) for f in fmt.own_fields}
    assert kinds == {
        "filename": ("data_loc", "__data_loc char[]"),
        "pid": ("scalar", "pid_t"),
        "name": ("pointer", "const char *"),
        "comm": ("string", "char[16]"),
        "saddr": ("array", "__u8[4]"),
        "args": ("array", "unsigned long[6]"),
        "bar": ("opaque", "struct foo"),
    }
    assert fmt.field("name").user_string
    assert fmt.field("filename").textual


def _format(*fields: FormatField) -> TracepointFormat:
    return TracepointFormat("signal", "signal_generate", 1, fields)


SIG = FormatField("sig", "int", 8, 4, True, "scalar")
COMM = FormatField("comm", "char[16]", 12, 16, False, "string")
ARGV = FormatField("argv", "const char * const *", 32, 8, False, "pointer")


@pytest.mark.parametrize(
    ("subscription", "message"),
    [
        ({"fields": ["sgi"]}, "has no field 'sgi'; its fields: sig, comm, argv"),
        ({"filter": "comm == 3"}, "filter: comm is char[16], not a number"),
        ({"filter": 'sig == "x"'}, "filter: sig is int, not a string"),
        ({"readUser": ["argv"]}, "readUser: argv is const char * const *; only `const char *`"),
        ({"mode": "histogram", "field": "comm"}, "field: comm is char[16], not a number"),
        ({"fields": ["sig"], "limits": {"fields": 1}, "filter": "sig in [1, 2]"}, None),
    ],
)
def test_subscription_errors_name_the_field(
    subscription: dict[str, Any], message: str | None
) -> None:
    sub = Subscription.model_validate({"tracepoint": "signal:signal_generate", **subscription})
    fmt = _format(SIG, COMM, ARGV)
    if message is None:
        tracepoint_gen.plan(0, sub, fmt)
        return
    with pytest.raises(tracepoint_gen.SubscriptionError) as caught:
        tracepoint_gen.plan(0, sub, fmt)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("sig = 9", 4, "unexpected character '='"),
        ("sig == 9 &&", 11, "expected a field name, found the end"),
        ("9 == sig", 0, "the field comes first"),
        ("sig.size() == 3", 4, "unknown method 'size'"),
        ('sig < "a"', 4, "strings compare with == and != only"),
        ("sig in [1, x]", 11, "expected int, found 'x'"),
        ("sig == 1 || (pid == 2", 21, "expected ')', found the end"),
        ("sig == 99999999999999999999", 7, "integer out of the 64-bit range"),
    ],
)
def test_filter_errors_give_the_position(text: str, position: int, reason: str) -> None:
    with pytest.raises(flt.FilterError) as caught:
        flt.parse(text)
    assert caught.value.position == position
    assert reason in caught.value.reason


def test_filter_terms_limit_in_the_settings() -> None:
    with pytest.raises(ValueError, match=r"filter has 5 terms, above limits\.filterTerms"):
        Subscription.model_validate(
            {
                "tracepoint": "a:b",
                "filter": "x in [1,2,3,4] || y == 1",
                "limits": {"filterTerms": 4},
            }
        )


def _btf(sig_offset: int) -> Any:
    from tests.support.btf_builder import BTFBuilder
    from vigil.agent.kernel import btf

    builder = BTFBuilder()
    int_id = builder.int_("int", 4, encoding=1)
    u32 = builder.int_("unsigned int", 4)
    builder.struct(
        "trace_event_raw_signal_generate",
        16,
        [("sig", int_id, sig_offset * 8), ("__data_loc_comm", u32, 12 * 8)],
    )
    return btf.BTF.from_bytes(builder.build())


def test_format_offsets_are_checked_against_btf_where_it_has_the_struct() -> None:
    sub = Subscription.model_validate({"tracepoint": "signal:signal_generate", "fields": ["sig"]})
    fmt = _format(SIG, COMM, ARGV)  # the format file says sig is at 8
    tracepoint_gen.plan(0, sub, fmt, _btf(8))  # BTF agrees
    with pytest.raises(tracepoint_gen.SubscriptionError) as caught:
        tracepoint_gen.plan(0, sub, fmt, _btf(16))
    assert "format file says offset 8, BTF's trace_event_raw_signal_generate says 16" in str(
        caught.value
    )
    other = TracepointFormat("signal", "other_event", 1, (SIG,))  # no struct of its name
    tracepoint_gen.plan(
        0, sub.model_copy(update={"tracepoint": "signal:other_event"}), other, _btf(16)
    )
