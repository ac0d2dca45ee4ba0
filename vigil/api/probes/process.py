"""Settings of the `process` probe: fork, exec (path + argv) and exit."""

from __future__ import annotations

from pydantic import Field, field_validator

from vigil.api.base import ApiModel
from vigil.api.patterns import check_patterns
from vigil.api.probes.common import RingBuffer

# Masks the value of secret-looking options. Patterns run over the command line
# joined with single spaces; the named group `value` (else the whole match) is
# replaced with REDACTED, argument by argument.
DEFAULT_REDACTIONS: tuple[str, ...] = (
    r"(?i)--?[\w.-]*(?:password|passwd|pwd|token|secret|api[-_]?key|credentials?)[\w.-]*"
    r"(?:=| )(?P<value>\S+)",
    r"(?i)\b[\w.-]*(?:password|passwd|token|secret|api[-_]?key)[\w.-]*=(?P<value>\S+)",
    r"(?i)\bauthorization:\s*(?:bearer|basic)\s+(?P<value>\S+)",
    r"://[^/\s:@]+:(?P<value>[^/\s@]+)@",
)


def check_redactions(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Every redaction must be a regex RE2 runs: name the first one that is not."""
    return check_patterns(patterns, field="redact")


class ArgumentCapture(ApiModel):
    """How much of argv an exec event carries, and what is masked in it."""

    enabled: bool = True
    max_args: int = Field(32, ge=1, le=1024, description="arguments kept per exec")
    max_arg_length: int = Field(256, ge=1, le=4095, description="characters kept per argument")
    max_bytes: int = Field(
        4095, ge=1, le=4095, description="bytes of argv read in the kernel (before splitting)"
    )
    redact: tuple[str, ...] = Field(
        DEFAULT_REDACTIONS,
        description="regexes over the space-joined command line; group `value` is masked",
    )

    @field_validator("redact")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return check_redactions(patterns)


class ProcessProbe(ApiModel):
    enabled: bool = True
    args: ArgumentCapture = ArgumentCapture()
    ring_buffer: RingBuffer = RingBuffer()
