"""The `tracepoints` probe: any kernel tracepoint, from subscriptions in the config.

Kernel side: generated. At creation each subscription is checked against
its tracepoint's format file (agent/kernel/tracepoint_formats.py) and laid
out (agent/probes/tracepoint_gen.py); the valid ones become one C file from
bpf/tracepoint.bpf.c.in, compiled with the other probes like any
bpf/*.bpf.c. A subscription that is invalid for this kernel (unknown
tracepoint or field, wrong type, over a limit), or whose program the
verifier refuses or cannot attach, is reported in `problems` and the
others run.

  stream     one `tracepoint.<subsystem>.<event>` event per hit: process.pid,
             thread.id, thread.name, process.executable.name (the comm),
             vigil.cgroup.id and vigil.tracepoint.<field> per kept field;
             rate-limited per CPU (the excess is counted, per subscription)
  count      vigil.tracepoint.events per cgroup and `by` fields (kernel map)
  histogram  vigil.tracepoint.<field> per cgroup, log2 buckets (kernel map)
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import struct
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from vigil.agent.kernel import btf, compiler, tracepoint_formats
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import LOG2_SLOTS, Log2Histogram
from vigil.agent.pipeline.samples import MetricPoint, MetricSpec, registered
from vigil.agent.probes import tracepoint_gen
from vigil.agent.probes.base import DecodeError, Hook, Probe, ProbeContext, ProbeError
from vigil.api.attributes import (
    PROCESS_EXECUTABLE_NAME,
    PROCESS_PID,
    THREAD_ID,
    THREAD_NAME,
    VIGIL_CGROUP_ID,
    VIGIL_SUBSCRIPTION_TRACEPOINT,
    vigil_tracepoint_field,
)
from vigil.api.events import AttributeValue
from vigil.api.probes.tracepoints import TracepointsProbe as TracepointsConfig

log = logging.getLogger(__name__)

EVENTS = registered("vigil.tracepoint.events")
HEADER = tracepoint_gen.HEADER
_SUBSCRIPTION_AT = 40  # vigil_tp_header.subscription


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _converter(slot: tracepoint_gen.Slot) -> Callable[[Any], AttributeValue]:
    """Record value -> attribute value for one slot."""
    field = slot.field
    if slot.kind == "int":
        return int
    if slot.kind in ("string", "user_string"):
        return lambda raw: _text(raw[: slot.capacity])
    if slot.kind == "ints":
        raw_size = field.size
        if field.element_size == 1 and not field.signed:
            return lambda raw: raw[:raw_size].hex()
        code = {1: "b", 2: "h", 4: "i", 8: "q"}[field.element_size]
        code = code if field.signed else code.upper()
        element = struct.Struct(f"<{raw_size // field.element_size}{code}")
        return lambda raw: [str(v) for v in element.unpack_from(raw)]
    return lambda raw: raw.hex()  # bytes: cut to their length by the decoder


class _Decoder:
    """One stream subscription's record -> attributes."""

    def __init__(self, plan: tracepoint_gen.Plan) -> None:
        self.plan = plan
        self.struct = struct.Struct(plan.record_format())
        wide = [s for s in plan.slots if s.wide]
        narrow = [s for s in plan.slots if not s.wide]
        base = 7  # ts, cgroup_id, tgid, pid, comm, subscription, reserved
        at = {s.field.name: base + i for i, s in enumerate(wide)}
        lengths = {name: base + len(wide) + i for i, name in enumerate(plan.lengths)}
        after = base + len(wide) + len(plan.lengths)
        at |= {s.field.name: after + i for i, s in enumerate(narrow)}
        slots = {s.field.name: s for s in plan.slots}
        self.fields: list[tuple[str, int, Callable[[Any], AttributeValue], int | None]] = [
            (
                vigil_tracepoint_field(field.name),
                at[field.name],
                _converter(slots[field.name]),
                lengths.get(field.name),
            )
            for field in plan.kept
        ]

    def attributes(self, record: bytes) -> tuple[int, dict[str, AttributeValue]]:
        if len(record) != self.struct.size:
            raise DecodeError(
                f"{self.plan.format.name}: record of {len(record)} bytes, "
                f"expected {self.struct.size}"
            )
        values = self.struct.unpack_from(record)
        ts, cgroup_id, tgid, pid, comm = values[:5]
        name = _text(comm)
        attrs: dict[str, AttributeValue] = {
            PROCESS_PID: tgid,
            THREAD_ID: pid,
            THREAD_NAME: name,
            PROCESS_EXECUTABLE_NAME: name,
            VIGIL_CGROUP_ID: cgroup_id,
        }
        for key, at, convert, length_at in self.fields:
            raw = values[at]
            if length_at is not None:
                raw = raw[: values[length_at]]
            attrs[key] = convert(raw)
        return ts, attrs


class TracepointsProbe(Probe):
    name: ClassVar[str] = "tracepoints"
    source: ClassVar[str] = "tracepoint.bpf.c.in"  # a template: see source_file()
    hooks: ClassVar[tuple[Hook, ...]] = ()  # one per valid subscription: enabled_hooks()
    # Read by the cgroup_rmdir program that retires removed cgroups' aggregates.
    members: ClassVar[tuple[str, ...]] = tracepoint_gen.RETIRE_MEMBERS
    ring_buffers: ClassVar[tuple[str, ...]] = ("tp_events",)
    drops_map: ClassVar[str | None] = "tp_drops"

    config: TracepointsConfig

    def __init__(
        self,
        context: ProbeContext,
        config: Any = None,
        *,
        tracefs: Path | None = None,
        reader: btf.BTF | None = None,
    ) -> None:
        super().__init__(context, config)
        self.problems: dict[int, str] = {}  # subscription index -> why it does not run
        self.plans: list[tracepoint_gen.Plan] = []
        self.rate_limited: dict[int, int] = {}  # subscription index -> events over the limit
        if reader is None:
            try:
                reader = btf.load_vmlinux()
            except btf.BTFError:
                reader = None  # offsets from the format files alone
        for index, sub in enumerate(self.config.subscriptions):
            try:
                fmt = tracepoint_formats.load(sub.tracepoint, tracefs)
                self.plans.append(tracepoint_gen.plan(index, sub, fmt, reader))
            except (tracepoint_formats.FormatError, tracepoint_gen.SubscriptionError) as exc:
                self._problem(index, str(exc))
                continue
            if sub.taxes_every_syscall:
                log.warning(
                    "tracepoints: subscription %d (%s) taxes every syscall of every task on "
                    "the node while it runs, like the syscalls probe",
                    index,
                    sub.tracepoint,
                )
        if not self.plans:
            raise ProbeError(
                "probe tracepoints: no subscription can run: "
                + ("; ".join(self._describe(i) for i in sorted(self.problems)) or "none given")
            )
        self._decoders = {p.index: _Decoder(p) for p in self.plans if p.with_header}
        self._workdir = Path(tempfile.mkdtemp(prefix="vigil-tracepoints-"))
        scope = {p.index: p.index for p in self.plans if p.subscription.policy is not None}
        self._source = tracepoint_gen.write(self.plans, self._workdir, scope)
        self._hooks = tuple(Hook("tracepoint", p.format.name, p.function) for p in self.plans)
        self._aggregates = [p for p in self.plans if p.subscription.mode != "stream"]
        self._retire_hook = (
            Hook("raw_tracepoint", "cgroup:cgroup_rmdir", tracepoint_gen.RETIRE_FUNCTION)
            if self._aggregates
            else None
        )

    def _describe(self, index: int) -> str:
        sub = self.config.subscriptions[index]
        return f"subscriptions[{index}] ({sub.tracepoint}): {self.problems[index]}"

    def _problem(self, index: int, reason: str) -> None:
        self.problems[index] = reason
        log.error("probe tracepoints: %s", self._describe(index))

    def source_file(self) -> str:
        return str(self._source)

    def policy_scope(self) -> tuple[bytes, dict[str, int]] | None:
        bits: dict[str, int] = {}
        for plan in self.plans:
            policy = plan.subscription.policy
            if policy is not None:
                bits[policy] = bits.get(policy, 0) | 1 << plan.index
        return (b"tp_scope", bits) if bits else None

    def enabled_hooks(self) -> tuple[Hook, ...]:
        return self._hooks if self._retire_hook is None else (*self._hooks, self._retire_hook)

    def defines(self) -> dict[str, int | str]:
        return {
            "TP_RINGBUF_PAGES": self.config.ring_buffer.pages,
            "TP_MAX_ENTRIES": self.config.max_entries,
        }

    def configure(self, bpf: Any) -> None:
        bpf[b"tp_config"][ctypes.c_int(0)] = ctypes.c_uint64(self.config.ring_buffer.wake_bytes)

    def update_config(self, config: TracepointsConfig) -> bool:
        same = (
            config.subscriptions == self.config.subscriptions
            and config.max_entries == self.config.max_entries
            and config.ring_buffer.pages == self.config.ring_buffer.pages
        )
        if not same:
            return False  # generated code changes: a new instance replaces this one
        self.config = config
        if self.bpf is not None:
            self.configure(self.bpf)
        return True

    # -- attach: each subscription on its own ----------------------------------------------

    def attach(self, bpf: Any) -> None:
        """Attach every subscription's program; one the verifier refuses is reported, not fatal."""
        from vigil.agent.probes.base import _attach_hook  # the base's libbcc attach

        self.bpf = bpf
        self.configure(bpf)
        for plan, hook in zip(self.plans, self._hooks, strict=True):
            log_lines: list[str] = []
            try:
                with compiler.captured_stderr() as log_lines:
                    fd = _attach_hook(bpf, hook)
                self._attached.append((hook, fd))
            except Exception as exc:  # bcc raises a bare Exception; the verifier writes to fd 2
                verifier = "".join(log_lines).strip().splitlines()[-12:]
                detail = ("\n" + "\n".join(verifier)) if verifier else ""
                self._problem(plan.index, f"cannot load or attach: {exc}{detail}")
        if self._attached and self._retire_hook is not None:
            try:
                self._attached.append((self._retire_hook, _attach_hook(bpf, self._retire_hook)))
            except Exception as exc:  # aggregates still work; removed cgroups stay in the maps
                log.error("probe tracepoints: cgroup_rmdir not attached: %s", exc)
        if not self._attached:
            raise ProbeError(
                "probe tracepoints: no subscription attached: "
                + "; ".join(self._describe(i) for i in sorted(self.problems))
            )

    def detach(self) -> None:
        super().detach()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def read_kernel_drops(self) -> None:
        super().read_kernel_drops()
        if self.bpf is None:
            return
        table = self.bpf[b"tp_limited"]
        for plan in self.plans:
            if plan.subscription.mode == "stream":
                count = sum(int(v) for v in table.getvalue(ctypes.c_int(plan.index)))
                self.rate_limited[plan.index] = count
        self.counters.dropped_kernel += sum(self.rate_limited.values())

    # -- decode ----------------------------------------------------------------------------

    def decode(self, record: bytes) -> Event:
        if len(record) < HEADER.size:
            raise DecodeError(f"record of {len(record)} bytes, shorter than the header")
        (index,) = struct.unpack_from("<I", record, _SUBSCRIPTION_AT)
        decoder = self._decoders.get(index)
        if decoder is None:
            raise DecodeError(f"record of unknown subscription {index}")
        ts, attrs = decoder.attributes(record)
        return Event(decoder.plan.kind, self.context.clock.to_wall_ns(ts), attrs)

    def decode_batch(self, records: Sequence[bytes]) -> list[Event]:
        return self._decode_each(records, self.decode)

    # -- kernel aggregates -----------------------------------------------------------------

    def collect(self) -> list[MetricPoint]:
        """Every count and histogram; removed cgroups' once more, then they are deleted.

        The removed cgroups are read BEFORE the snapshot, so each one's last
        values are in the points returned (as cgroup_maps.release does).
        """
        if self.bpf is None or not self._aggregates:
            return []
        retired_table = self.bpf[b"tp_retired"]
        retired = {int(key.value) for key in retired_table}
        points: list[MetricPoint] = []
        for plan in self._aggregates:
            if plan.subscription.mode == "count":
                points += self._counts(plan)
            else:
                points += self._histograms(plan)
        if retired:
            self._release(retired)
        return points

    def _release(self, retired: set[int]) -> None:
        for plan in self._aggregates:
            kind = "counts" if plan.subscription.mode == "count" else "buckets"
            table = self.bpf[f"tp{plan.index}_{kind}".encode()]
            for key in [k for k in table.keys() if int(k.cgroup_id) in retired]:  # noqa: SIM118
                with contextlib.suppress(KeyError):
                    del table[key]
        table = self.bpf[b"tp_retired"]
        for cgroup_id in retired:
            with contextlib.suppress(KeyError):
                del table[table.Key(cgroup_id)]

    def counts(self, plan: tracepoint_gen.Plan) -> dict[tuple[AttributeValue, ...], int]:
        """(cgroup id, *by values) -> hits, summed over CPUs."""
        table = self.bpf[f"tp{plan.index}_counts".encode()]
        by = [next(s for s in plan.slots if s.field.name == n) for n in plan.subscription.by]
        result: dict[tuple[AttributeValue, ...], int] = {}
        for key, per_cpu in table.items():
            values: list[AttributeValue] = [int(key.cgroup_id)]
            for slot in by:
                raw = getattr(key, slot.cname)
                values.append(int(raw) if slot.wide else _text(bytes(raw)))
            result[tuple(values)] = sum(int(v) for v in per_cpu)
        return result

    def _counts(self, plan: tracepoint_gen.Plan) -> list[MetricPoint]:
        points = []
        for key, count in self.counts(plan).items():
            attrs: dict[str, AttributeValue] = {
                VIGIL_SUBSCRIPTION_TRACEPOINT: plan.format.name,
                VIGIL_CGROUP_ID: key[0],
            }
            for name, value in zip(plan.subscription.by, key[1:], strict=True):
                attrs[vigil_tracepoint_field(name)] = value
            points.append(MetricPoint(EVENTS, attrs, count))
        return points

    def histograms(self, plan: tracepoint_gen.Plan) -> dict[int, Log2Histogram]:
        """cgroup id -> histogram of the subscription's field, summed over CPUs."""
        table = self.bpf[f"tp{plan.index}_buckets".encode()]
        slots: dict[int, list[int]] = defaultdict(lambda: [0] * LOG2_SLOTS)
        sums: dict[int, int] = defaultdict(int)
        for key, per_cpu in table.items():
            cgroup_id, slot, total = int(key.cgroup_id), int(key.slot), sum(int(v) for v in per_cpu)
            if slot >= LOG2_SLOTS:
                sums[cgroup_id] += total
            else:
                slots[cgroup_id][slot] += total
        return {cid: Log2Histogram.from_slots(counts, sums[cid]) for cid, counts in slots.items()}

    def _histograms(self, plan: tracepoint_gen.Plan) -> list[MetricPoint]:
        field = plan.subscription.field
        assert field is not None
        spec = MetricSpec(
            vigil_tracepoint_field(field),
            "histogram",
            "1",
            f"{field} of {plan.format.name} hits, log2 buckets",
        )
        return [
            MetricPoint(
                spec,
                {VIGIL_SUBSCRIPTION_TRACEPOINT: plan.format.name, VIGIL_CGROUP_ID: cgroup_id},
                histogram,
            )
            for cgroup_id, histogram in self.histograms(plan).items()
        ]
