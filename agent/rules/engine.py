"""CEL rules: compiled once per config, evaluated per selected event.

A rule belongs to one policy and sees only the events that policy selected.
It is a CEL expression over ``kind`` (the event kind) and ``attributes`` (the
enriched event attributes); when it is true the pipeline emits an extra event
of kind ``rule.match`` carrying the matched event's attributes plus
``vigil.rule.name``, ``vigil.rule.severity``, ``vigil.rule.policy`` and
``vigil.rule.event_kind``. A rule that fails on an event (a missing attribute,
a type error, a non-boolean result) is counted and never stops the pipeline.

Per event the cost is one CEL context (its attributes converted to CEL
values, ~3 us per key) plus ~0.5 us per rule; see ``analysis`` for how the
context is kept to the keys the rules read and rules are skipped for kinds
they cannot match.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cel

from vigil.agent.pipeline.events import Event
from vigil.agent.rules import analysis
from vigil.api.config import ConfigError
from vigil.api.events import AttributeValue
from vigil.api.policies import Rule

log = logging.getLogger(__name__)

MATCH_KIND = "rule.match"
ATTR_NAME = "vigil.rule.name"
ATTR_SEVERITY = "vigil.rule.severity"
ATTR_POLICY = "vigil.rule.policy"
ATTR_EVENT_KIND = "vigil.rule.event_kind"

# What a rule may refer to; anything else fails on every event.
VARIABLES = frozenset({"kind", "attributes"})
# CEL macros bind their own variables (`attributes["a"].exists(x, x == "b")`).
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """One rule of one policy, ready to run (compared by identity)."""

    name: str
    severity: str
    policy: str  # the policy's display name: "namespace/name", or "name" when cluster-wide
    expression: str
    program: cel.Program
    kinds: frozenset[str] | None  # None: may match any kind
    keys: frozenset[str] | None  # None: reads the whole attribute map


def compile_rule(rule: Rule, *, policy: str, field: str) -> CompiledRule:
    """Compile `rule`; ConfigError names `field` (e.g. policies.0.rules.1.expression)."""
    try:
        program = cel.compile(rule.expression)
    except Exception as exc:  # ValueError with the position; be safe with the rest
        raise ConfigError(f"{field}: not a valid CEL expression: {exc}") from None
    unknown = set(program.variables()) - VARIABLES
    if unknown and not _MACROS & _called_names(rule.expression):
        names = ", ".join(sorted(unknown))
        raise ConfigError(
            f"{field}: unknown variable(s) {names}; a rule sees only `kind` and `attributes` "
            '(e.g. attributes["process.executable.path"])'
        )
    return CompiledRule(
        name=rule.name,
        severity=rule.severity,
        policy=policy,
        expression=rule.expression,
        program=program,
        kinds=analysis.kinds_of(rule.expression),
        keys=analysis.attribute_keys(rule.expression),
    )


def _called_names(expression: str) -> set[str]:
    tokens = analysis.tokenize(expression) or []
    return {
        token.text
        for index, token in enumerate(tokens[:-1])
        if token.kind == "ident" and tokens[index + 1].text == "("
    }


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules to run for one (policies, kind) and the attribute keys they read."""

    rules: tuple[CompiledRule, ...]
    keys: frozenset[str] | None  # None: the whole map

    @classmethod
    def of(cls, rules: Sequence[CompiledRule], kind: str) -> Plan:
        chosen = tuple(r for r in rules if r.kinds is None or kind in r.kinds)
        keys: frozenset[str] | None = frozenset()
        for rule in chosen:
            keys = None if keys is None or rule.keys is None else keys | rule.keys
        return cls(chosen, keys)


NO_RULES = Plan((), frozenset())


@dataclass(slots=True)
class RuleCounters:
    evaluations: int = 0  # rule runs (after the kind shortcut)
    matches: int = 0  # rule.match events emitted
    errors: int = 0  # runs that failed or did not return a boolean

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RuleRunner:
    """Runs plans on events and emits rule.match events; one per pipeline thread."""

    def __init__(self) -> None:
        self.counters = RuleCounters()
        self._warned: set[int] = set()

    def run(self, event: Event, plan: Plan, out: list[Event]) -> None:
        """Evaluate `plan` on `event`, appending a rule.match event per rule that holds."""
        attrs = event.attributes
        keys = plan.keys
        visible = attrs if keys is None else {k: attrs[k] for k in keys if k in attrs}
        context = cel.Context(variables={"kind": event.kind, "attributes": visible})
        counters = self.counters
        for rule in plan.rules:
            counters.evaluations += 1
            try:
                result = rule.program.execute(context)
            except Exception as exc:
                counters.errors += 1
                self._warn(rule, event, f"{type(exc).__name__}: {exc}")
                continue
            if result is True:
                counters.matches += 1
                out.append(match_event(rule, event))
            elif result is not False:
                counters.errors += 1
                self._warn(rule, event, f"returned {result!r}, not a boolean")

    def _warn(self, rule: CompiledRule, event: Event, reason: str) -> None:
        if id(rule) in self._warned:
            log.debug("rule %s/%s on %s: %s", rule.policy, rule.name, event.kind, reason)
            return
        self._warned.add(id(rule))
        log.warning(
            "rule %r of policy %s failed on a %s event: %s (guard optional attributes with "
            '`"key" in attributes`; later failures are only counted in rules.errors)',
            rule.name,
            rule.policy,
            event.kind,
            reason,
        )

    def forget_warnings(self) -> None:
        """A new config: its rules may warn again."""
        self._warned.clear()


def match_event(rule: CompiledRule, event: Event) -> Event:
    attrs: dict[str, AttributeValue] = dict(event.attributes)
    attrs[ATTR_NAME] = rule.name
    attrs[ATTR_SEVERITY] = rule.severity
    attrs[ATTR_POLICY] = rule.policy
    attrs[ATTR_EVENT_KIND] = event.kind
    return Event(MATCH_KIND, event.time_ns, attrs)
