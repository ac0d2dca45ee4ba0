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
from dataclasses import asdict, dataclass, field

from vigil.agent.pipeline.events import Event
from vigil.agent.rules import analysis
from vigil.api.attributes import (
    VIGIL_RULE_EVENT_KIND,
    VIGIL_RULE_NAME,
    VIGIL_RULE_POLICY,
    VIGIL_RULE_SEVERITY,
)
from vigil.api.cel_ext import cel
from vigil.api.config import ConfigError
from vigil.api.events import AttributeValue
from vigil.api.policies import Rule

log = logging.getLogger(__name__)

MATCH_KIND = "rule.match"

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


# One rule's result on some inputs: True (match), False, or why it failed.
Outcome = bool | str
_ABSENT = object()
MEMO_LIMIT = 4096


@dataclass(frozen=True, slots=True, eq=False)
class _Group:
    """Rules of a plan that read the same attribute keys, with their remembered outcomes."""

    keys: tuple[str, ...] | None  # sorted; None: the whole map (never remembered)
    indices: tuple[int, ...]  # positions in Plan.rules
    rules: tuple[CompiledRule, ...]
    memo: dict[tuple[object, ...], tuple[Outcome, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """The rules to run for one (policies, kind), grouped by the attribute keys they read.

    CEL is pure: the same inputs give the same results. A group's outcomes are
    remembered by the values of its keys (bounded; cleared when full), so a
    binary that runs again in the same pod costs a tuple and a dict lookup
    per group instead of a CEL context. Only the groups not remembered are
    evaluated, through one context holding just the keys they read.
    """

    rules: tuple[CompiledRule, ...]
    groups: tuple[_Group, ...]

    @classmethod
    def of(cls, rules: Sequence[CompiledRule], kind: str) -> Plan:
        chosen = tuple(r for r in rules if r.kinds is None or kind in r.kinds)
        by_keys: dict[tuple[str, ...] | None, list[int]] = {}
        for index, rule in enumerate(chosen):
            keys = tuple(sorted(rule.keys)) if rule.keys is not None else None
            by_keys.setdefault(keys, []).append(index)
        groups = tuple(
            _Group(keys, tuple(indices), tuple(chosen[i] for i in indices))
            for keys, indices in by_keys.items()
        )
        return cls(chosen, groups)


NO_RULES = Plan((), ())


def _memo_key(attrs: dict[str, AttributeValue], keys: tuple[str, ...]) -> tuple[object, ...]:
    # The type is part of the key: True == 1 in Python, not in CEL.
    key: list[object] = []
    for name in keys:
        value = attrs.get(name, _ABSENT)
        key.append((list, tuple(value)) if isinstance(value, list) else (type(value), value))
    return tuple(key)


@dataclass(slots=True)
class RuleCounters:
    evaluations: int = 0  # rule runs (after the kind shortcut), remembered ones included
    matches: int = 0  # rule.match events emitted
    errors: int = 0  # runs that failed or did not return a boolean
    cached: int = 0  # of the evaluations: answered from a plan's memo

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
        counters = self.counters
        outcomes: list[Outcome] = [False] * len(plan.rules)
        pending: list[tuple[_Group, tuple[object, ...] | None]] = []
        for group in plan.groups:
            if group.keys is None:
                pending.append((group, None))
                continue
            try:
                memo_key: tuple[object, ...] | None = _memo_key(attrs, group.keys)
                known = group.memo.get(memo_key)  # type: ignore[arg-type]
            except TypeError:  # an unhashable value: evaluate, do not remember
                memo_key, known = None, None
            if known is None:
                pending.append((group, memo_key))
                continue
            counters.cached += len(known)
            for index, outcome in zip(group.indices, known, strict=True):
                outcomes[index] = outcome
        if pending:
            self._evaluate(event.kind, attrs, pending, outcomes)
        counters.evaluations += len(outcomes)
        for rule, outcome in zip(plan.rules, outcomes, strict=True):
            if outcome is True:
                counters.matches += 1
                out.append(match_event(rule, event))
            elif outcome is not False:
                counters.errors += 1
                self._warn(rule, event, outcome)

    @staticmethod
    def _evaluate(
        kind: str,
        attrs: dict[str, AttributeValue],
        pending: list[tuple[_Group, tuple[object, ...] | None]],
        outcomes: list[Outcome],
    ) -> None:
        """Run the pending groups through one CEL context holding only the keys they read."""
        wanted: set[str] | None = set()
        for group, _ in pending:
            wanted = None if wanted is None or group.keys is None else wanted.union(group.keys)
        visible = attrs if wanted is None else {k: attrs[k] for k in wanted if k in attrs}
        context = cel.Context(variables={"kind": kind, "attributes": visible})
        for group, memo_key in pending:
            results: list[Outcome] = []
            for rule in group.rules:
                try:
                    result = rule.program.execute(context)
                except Exception as exc:
                    results.append(f"{type(exc).__name__}: {exc}")
                    continue
                if result is True or result is False:
                    results.append(result)
                else:
                    results.append(f"returned {result!r}, not a boolean")
            for index, outcome in zip(group.indices, results, strict=True):
                outcomes[index] = outcome
            if memo_key is not None:
                if len(group.memo) >= MEMO_LIMIT:
                    group.memo.clear()
                group.memo[memo_key] = tuple(results)

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
    attrs[VIGIL_RULE_NAME] = rule.name
    attrs[VIGIL_RULE_SEVERITY] = rule.severity
    attrs[VIGIL_RULE_POLICY] = rule.policy
    attrs[VIGIL_RULE_EVENT_KIND] = event.kind
    return Event(MATCH_KIND, event.time_ns, attrs)
