"""The console's DETAIL column for kinds other than exec/exit: what matters per kind.

TCP: the peer, the bytes each way, the duration (or the error of a failed
connect); OOM: the victim's memory figures and what triggered it; slow
syscalls: the call, its time and errno; checks: severity, name, subject and
the value that fired them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rich.text import Text

from vigil.api.attributes import (
    ERROR_TYPE,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    PROCESS_EXECUTABLE_NAME,
    VIGIL_CHECK_NAME,
    VIGIL_CHECK_POLICY,
    VIGIL_CHECK_SEVERITY,
    VIGIL_CHECK_SUBJECT,
    VIGIL_CHECK_VALUE,
    VIGIL_OOM_ANON_RSS,
    VIGIL_OOM_SCORE_ADJ,
    VIGIL_OOM_TOTAL_VM,
    VIGIL_OOM_TRIGGER_NAME,
    VIGIL_OOM_TRIGGER_PID,
    VIGIL_SYSCALL_DURATION_NS,
    VIGIL_SYSCALL_ERRNO,
    VIGIL_SYSCALL_NAME,
    VIGIL_TCP_BYTES_RECEIVED,
    VIGIL_TCP_BYTES_SENT,
    VIGIL_TCP_DIRECTION,
    VIGIL_TCP_DURATION_NS,
    VIGIL_TCP_FAILED,
    VIGIL_TCP_RETRANSMITS,
)

Attrs = Mapping[str, object]


def size(value: object) -> str:
    """Bytes as people read them (1.5MiB); '?' when absent."""
    if not isinstance(value, int):
        return "?"
    number = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if number < 1024 or unit == "GiB":
            return f"{number:.0f}{unit}" if unit == "B" else f"{number:.1f}{unit}"
        number /= 1024
    return "?"


def _ms(ns: object) -> str:
    return f"{ns / 1e6:.1f}ms" if isinstance(ns, int) else "?"


def tcp(attrs: Attrs) -> Text:
    peer = attrs.get(NETWORK_PEER_ADDRESS, "?")
    peer = f"[{peer}]" if isinstance(peer, str) and ":" in peer else peer
    text = Text(
        f"{attrs.get(PROCESS_EXECUTABLE_NAME, '?')} {attrs.get(VIGIL_TCP_DIRECTION, '?')} "
        f"peer={peer}:{attrs.get(NETWORK_PEER_PORT, '?')} "
    )
    if attrs.get(VIGIL_TCP_FAILED):
        text.append(f"failed {attrs.get(ERROR_TYPE, '')}".rstrip(), style="red")
        return text
    text.append(
        f"sent={size(attrs.get(VIGIL_TCP_BYTES_SENT))} "
        f"recv={size(attrs.get(VIGIL_TCP_BYTES_RECEIVED))} "
        f"dur={_ms(attrs.get(VIGIL_TCP_DURATION_NS))}"
    )
    retransmits = attrs.get(VIGIL_TCP_RETRANSMITS)
    if retransmits:
        text.append(f" retrans={retransmits}", style="yellow")
    return text


def oom(attrs: Attrs) -> Text:
    return Text(
        f"{attrs.get(PROCESS_EXECUTABLE_NAME, '?')} killed: "
        f"anon_rss={size(attrs.get(VIGIL_OOM_ANON_RSS))} "
        f"total_vm={size(attrs.get(VIGIL_OOM_TOTAL_VM))} "
        f"score_adj={attrs.get(VIGIL_OOM_SCORE_ADJ, '?')} "
        f"by={attrs.get(VIGIL_OOM_TRIGGER_NAME, '?')}[{attrs.get(VIGIL_OOM_TRIGGER_PID, '?')}]",
        style="bold red",
    )


def slow_syscall(attrs: Attrs) -> Text:
    text = Text(
        f"{attrs.get(PROCESS_EXECUTABLE_NAME, '?')} {attrs.get(VIGIL_SYSCALL_NAME, '?')} "
        f"{_ms(attrs.get(VIGIL_SYSCALL_DURATION_NS))}"
    )
    errno = attrs.get(VIGIL_SYSCALL_ERRNO)
    if errno:
        text.append(f" errno={errno}", style="red")
    return text


def check(attrs: Attrs) -> Text:
    policy = attrs.get(VIGIL_CHECK_POLICY)
    scope = f" ({policy})" if policy else ""
    return Text(
        f"[{attrs.get(VIGIL_CHECK_SEVERITY, '?')}] {attrs.get(VIGIL_CHECK_NAME, '?')}{scope} "
        f"on {attrs.get(VIGIL_CHECK_SUBJECT, '?')}: {attrs.get(VIGIL_CHECK_VALUE, '')}"
    )


FORMATTERS: dict[str, Callable[[Attrs], Text]] = {
    "network.tcp.close": tcp,
    "process.oom_kill": oom,
    "syscall.slow": slow_syscall,
    "check.firing": check,
    "check.resolved": check,
}
