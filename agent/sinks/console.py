"""A readable live table on the terminal, in the spirit of execsnoop/exitsnoop."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from vigil.agent.pipeline.events import Event
from vigil.agent.sinks import details
from vigil.api.attributes import (
    CONTAINER_ID,
    K8S_NAMESPACE_NAME,
    K8S_POD_NAME,
    PROCESS_COMMAND_ARGS,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH,
    PROCESS_EXIT_CODE,
    PROCESS_PARENT_PID,
    PROCESS_PID,
    VIGIL_PROCESS_EXIT_SIGNAL,
    VIGIL_RULE_EVENT_KIND,
    VIGIL_SYSTEMD_UNIT,
)

_COLUMNS = (
    ("TIME", 12, "dim"),
    ("CGROUP/POD", 20, "cyan"),
    ("PID", 7, None),
    ("PPID", 7, None),
    ("EVENT", 8, "bold"),
    ("DETAIL", None, None),
)
# kind -> (label, style); the label is the kind's last word.
_EVENT_STYLE = {
    "process.exec": "green",
    "process.fork": "blue",
    "process.exit": "yellow",
    "rule.match": "bold red",
    "network.tcp.close": "cyan",
    "process.oom_kill": "bold red",
    "syscall.slow": "magenta",
    "check.firing": "bold red",
    "check.resolved": "green",
}
_PIPE_WIDTH = 200  # not a terminal: long lines rather than wrapped columns


def _where(attrs: Mapping[str, object]) -> str:
    namespace, pod = attrs.get(K8S_NAMESPACE_NAME), attrs.get(K8S_POD_NAME)
    if namespace and pod:
        return f"{namespace}/{pod}"
    for key in (VIGIL_SYSTEMD_UNIT, CONTAINER_ID):
        value = attrs.get(key)
        if isinstance(value, str):
            return value[:12] if key == CONTAINER_ID else value
    return f"cgroup:{attrs.get('vigil.cgroup.id', '?')}"


def _detail(event: Event) -> Text:
    attrs = event.attributes
    if event.kind == "rule.match":
        # "[high] exec-from-tmp (shop/web) /tmp/x -c ...": the rule, then what it matched.
        head = Text(
            f"[{attrs.get('vigil.rule.severity')}] {attrs.get('vigil.rule.name')} "
            f"({attrs.get('vigil.rule.policy')}) ",
            style="bold red",
        )
        matched = Event(str(attrs.get(VIGIL_RULE_EVENT_KIND, "")), event.time_ns, attrs)
        return head + _detail(matched)
    if event.kind == "process.exit":
        code = attrs.get(PROCESS_EXIT_CODE)
        signal = attrs.get(VIGIL_PROCESS_EXIT_SIGNAL)
        text = Text(f"{attrs.get('process.executable.name', '?')} exit={code}")
        if signal:
            text.append(f" signal={signal}", style="red")
        elif code:
            text.stylize("red")
        return text
    formatter = details.FORMATTERS.get(event.kind)
    if formatter is not None:
        return formatter(attrs)
    args = attrs.get(PROCESS_COMMAND_ARGS)
    path = attrs.get(PROCESS_EXECUTABLE_PATH) or attrs.get(PROCESS_EXECUTABLE_NAME, "?")
    if isinstance(args, list) and args:
        return Text(f"{path} {' '.join(args[1:])}".rstrip())
    return Text(str(path))


class ConsoleSink:
    def __init__(self, console: Console | None = None) -> None:
        if console is None:
            console = Console(highlight=False)
            if not console.is_terminal:
                console = Console(highlight=False, width=_PIPE_WIDTH)
        self._console = console
        self._header_done = False

    def _table(self) -> Table:
        table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1))
        for _title, width, style in _COLUMNS:
            table.add_column(width=width, no_wrap=width is not None, style=style)
        return table

    def emit(self, events: Sequence[Event]) -> None:
        if not self._header_done:
            header = self._table()
            header.add_row(*(Text(title, style="bold underline") for title, *_ in _COLUMNS))
            self._console.print(header)
            self._header_done = True
        if not events:
            return
        table = self._table()
        for event in events:
            attrs = event.attributes
            seconds, nanos = divmod(event.time_ns, 1_000_000_000)
            stamp = time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{nanos // 1000000:03d}"
            table.add_row(
                stamp,
                _where(attrs),
                str(attrs.get(PROCESS_PID, "")),
                str(attrs.get(PROCESS_PARENT_PID, "")),
                Text(event.kind.rpartition(".")[2], style=_EVENT_STYLE.get(event.kind, "")),
                _detail(event),
            )
        self._console.print(table)

    def close(self) -> None:
        self._console.file.flush()
