"""Settings every probe shares: its ring buffer and its switch."""

from __future__ import annotations

from pydantic import Field, field_validator

from vigil.api.base import ApiModel


class RingBuffer(ApiModel):
    """A probe's ring buffer: size (compile time) and wakeup batching (live)."""

    pages: int = Field(1024, ge=1, le=65536, description="4 KiB pages; a power of two")
    wake_bytes: int = Field(
        512 * 1024,
        ge=0,
        description="wake the reader once this much is waiting; below it the reader drains "
        "on its timer (pipeline.drainIntervalMs)",
    )

    @field_validator("pages")
    @classmethod
    def _power_of_two(cls, pages: int) -> int:
        if pages & (pages - 1):
            raise ValueError(f"{pages} is not a power of two")
        return pages
