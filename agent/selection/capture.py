"""Argv capture a namespaced policy adds for the pods it selects, and only for them.

The node's capture (``probes.process.args``) applies to every exec. A tenant's
policy may raise it for its own pods (``AppliedPolicy.capture``): more bytes read
in the kernel (a per-cgroup value in the selection map, see kernel.py), more
and longer arguments kept, and its own redactions. Those are decided per event
here, after enrichment, where the pod is known, so they follow the same
selection as the policy's rules:

- the process probe decodes with the widest limits any policy asks for
  (``widened``), and the stage cuts each exec's argv back to the limits of the
  policies that selected it (the node's when none raise them), flagging
  ``vigil.process.args_truncated`` when it cuts;
- the redactions of the policies that selected an exec are applied after the
  node's, to that exec only.

Several policies over one pod combine to the most detailed capture: the max of
each limit and the union of redactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.redaction import Redactor
from vigil.api.attributes import PROCESS_COMMAND_ARGS, VIGIL_PROCESS_ARGS_TRUNCATED
from vigil.api.config import AgentConfig
from vigil.api.policies import ArgsCapture
from vigil.api.probes.process import ArgumentCapture


@dataclass(frozen=True, slots=True)
class Capture:
    """The argv limits and extra redactions for the events of one set of policies."""

    max_args: int
    max_arg_length: int
    redactor: Redactor | None  # the policies' own redactions (the node's ran at decode)


def combine(captures: Sequence[ArgsCapture], node: ArgumentCapture) -> Capture:
    """The most detailed capture of several policies, never below the node's."""
    redact = tuple(dict.fromkeys(pattern for c in captures for pattern in c.redact))
    return Capture(
        max_args=max([node.max_args, *(c.max_args for c in captures if c.max_args)]),
        max_arg_length=max(
            [node.max_arg_length, *(c.max_arg_length for c in captures if c.max_arg_length)]
        ),
        redactor=Redactor(redact) if redact else None,
    )


def kernel_bytes(captures: Sequence[ArgsCapture], node: ArgumentCapture) -> int:
    """Argv bytes the kernel should read for a cgroup of these policies; 0: the node's."""
    node_bytes = node.max_bytes if node.enabled else 0
    best = 0
    for capture in captures:
        if capture.enabled or node.enabled:
            best = max(best, capture.max_bytes or node.max_bytes)
    return best if best > node_bytes else 0


def widened(config: AgentConfig) -> AgentConfig:
    """`config` with the process probe decoding as much argv as any policy keeps.

    The kernel side stays the node's (per-cgroup bytes go through the selection map),
    so only the user-space limits widen; the stage cuts back per event.
    """
    captures = [p.capture for p in config.policies if p.capture is not None]
    if not captures:
        return config
    args = config.probes.process.args
    wide = combine(captures, args)
    if (wide.max_args, wide.max_arg_length) == (args.max_args, args.max_arg_length):
        return config
    new_args = args.model_copy(
        update={"max_args": wide.max_args, "max_arg_length": wide.max_arg_length}
    )
    process = config.probes.process.model_copy(update={"args": new_args})
    probes = config.probes.model_copy(update={"process": process})
    return config.model_copy(update={"probes": probes})


def apply(event: Event, capture: Capture, *, cut: bool) -> None:
    """Cut an exec's argv to `capture`'s limits (when `cut`) and apply its redactions."""
    attrs = event.attributes
    args = attrs.get(PROCESS_COMMAND_ARGS)
    if not isinstance(args, list) or not args:
        return
    if cut:
        limit = capture.max_arg_length
        if len(args) > capture.max_args or any(len(a) > limit for a in args):
            args = [a[:limit] for a in args[: capture.max_args]]
            attrs[VIGIL_PROCESS_ARGS_TRUNCATED] = True
    if capture.redactor is not None:
        args = capture.redactor.redact(args)
    attrs[PROCESS_COMMAND_ARGS] = args
