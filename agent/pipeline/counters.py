"""What each probe received and lost, stage by stage (nothing is lost silently)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class ProbeCounters:
    received: int = 0  # records read from the ring buffer
    dropped_kernel: int = 0  # ring buffer full in the kernel (from the probe's drop map)
    map_full: int = 0  # a bounded BPF map refused an insert
    dropped_queue: int = 0  # pipeline queue full: batch discarded
    decode_errors: int = 0  # records that did not decode

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
