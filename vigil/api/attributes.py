"""Every attribute key vigil writes: one vocabulary (DESIGN.md, principle 7).

Events, span and log attributes, metric point labels and the OTLP resource
all use these keys. A key is an OpenTelemetry semantic-convention name
wherever one exists, or vigil's own under `vigil.`. Each key is a plain `str`
constant here, named after the key (`process.pid` -> PROCESS_PID), and code
writes `attrs[PROCESS_PID]`, never the literal. Constants are imported by name
(`from vigil.api.attributes import PROCESS_PID`): in a decoder's dict display a
module global costs less than half what `module.NAME` does (about 3 vs 8 ns per
key over a literal). `ATTRIBUTES` holds what is known about each key (value
type, convention status, where it appears).

Status, checked against the installed `opentelemetry-semantic-conventions` by
tests/unit/test_attributes.py (never imported here: the agent does not need
it to run):

- stable: in the conventions' stable registry (`opentelemetry.semconv.attributes`);
- development: in the conventions, not yet stable (`..._incubating.attributes`);
- vigil: vigil's own, under `vigil.`;
- other: neither. Kept because changing a key changes what users query;
  principle 7 says they should move (the test pins the list).

Where a key appears (`on`): `event` (events, hence JSON lines, the console,
rules, and the span and log attributes built from events), `span` (set on
spans only), `metric` (a label on vigil's metrics by default:
`export.metrics.attributes` can add event keys), `resource` (the OTLP
resource), `internal` (events that never reach a sink).

README's attribute table is generated from here:
`python -m vigil.api.attributes --readme README.md`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from vigil.api import readme as readme_tables

# "int | str | list[str]": a template whose keys carry values of the kernel's types
# (vigil.tracepoint.<field>: integers, strings, integer arrays as lists of decimals).
ValueType = Literal["str", "int", "bool", "float", "list[str]", "int | str | list[str]"]
Status = Literal["stable", "development", "vigil", "other"]
Where = Literal["event", "span", "metric", "resource", "internal"]


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute key and what vigil puts under it."""

    name: str
    type: ValueType
    status: Status
    on: tuple[Where, ...]
    description: str
    # The conventions deprecated the key in favour of this one (kept: a rename is
    # a breaking change for users' queries).
    deprecated_by: str | None = None
    # The key is a prefix: the emitted keys are `<name>.<suffix>` (k8s.pod.label.<key>).
    template: bool = False
    # Values without a useful bound (ids, addresses, times, sizes): never a metric
    # attribute (export.metrics.attributes refuses them).
    unbounded: bool = False


_REGISTERED: list[Attribute] = []

# Keys whose values grow without bound on a busy node (a new value per process,
# connection, container or call): a metric keyed by one makes a series per value.
UNBOUNDED: Final[frozenset[str]] = frozenset(
    {
        "process.pid",
        "process.parent_pid",
        "vigil.cgroup.id",
        "process.creation.time",
        "process.exit.time",
        "process.command_args",
        "thread.id",
        "container.id",
        "k8s.pod.uid",
        "network.local.address",
        "network.local.port",
        "network.peer.address",
        "network.peer.port",
        "vigil.cgroup.path",
        "vigil.tcp.bytes_sent",
        "vigil.tcp.bytes_received",
        "vigil.tcp.retransmits",
        "vigil.tcp.duration_ns",
        "vigil.syscall.duration_ns",
        "vigil.oom.total_vm",
        "vigil.oom.anon_rss",
        "vigil.oom.file_rss",
        "vigil.oom.shmem_rss",
        "vigil.oom.pgtables",
        "vigil.oom.trigger.pid",
        "vigil.oom.trigger.cgroup.id",
        "service.instance.id",
    }
)


def _key(
    name: str,
    value_type: ValueType,
    status: Status,
    on: tuple[Where, ...],
    description: str,
    *,
    deprecated_by: str | None = None,
    template: bool = False,
) -> str:
    """Register a key and return it, so its constant is a plain str (fast dict keys)."""
    _REGISTERED.append(
        Attribute(
            name,
            value_type,
            status,
            on,
            description,
            deprecated_by,
            template,
            unbounded=name in UNBOUNDED,
        )
    )
    return name


_E: tuple[Where, ...] = ("event",)
_EM: tuple[Where, ...] = ("event", "metric")
_M: tuple[Where, ...] = ("metric",)
_R: tuple[Where, ...] = ("resource",)

# -- processes and threads (process, tcp, oom, syscalls probes) -------------------------

PROCESS_PID: Final = _key(
    "process.pid",
    "int",
    "development",
    _E,
    "Process id (the kernel's tgid): the process that forked, exec'd or exited, a TCP "
    "connection's owner, the OOM victim, the caller of a slow syscall",
)
PROCESS_PARENT_PID: Final = _key(
    "process.parent_pid", "int", "development", _E, "Parent's process id (process events)"
)
PROCESS_USER_ID: Final = _key(
    "process.user.id",
    "int",
    "development",
    _E,
    "uid of the process's credentials (process events). The kernel helper gives the real "
    "uid; the conventions mean the effective one (they differ for setuid programs)",
)
PROCESS_GROUP_ID: Final = _key(
    "process.group.id",
    "int",
    "other",
    _E,
    "gid of the process's credentials (real gid, process events). "
    "The conventions define no group id",
)
PROCESS_REAL_USER_ID: Final = _key(
    "process.real_user.id", "int", "development", _E, "Real uid of the OOM victim"
)
PROCESS_CREATION_TIME: Final = _key(
    "process.creation.time",
    "str",
    "development",
    _E,
    "When the process started (the kernel's start time), RFC 3339 with nanoseconds, UTC; "
    "a process span's start",
)
PROCESS_EXIT_TIME: Final = _key(
    "process.exit.time",
    "str",
    "development",
    _E,
    "When the process exited (process.exit), RFC 3339 with nanoseconds, UTC",
)
PROCESS_EXECUTABLE_PATH: Final = _key(
    "process.executable.path",
    "str",
    "development",
    _E,
    "Executable's path (the kernel's copy at exec); later events of the process get it "
    "from the process table",
)
PROCESS_EXECUTABLE_NAME: Final = _key(
    "process.executable.name",
    "str",
    "development",
    _E,
    "Executable's base name; the task's comm (15 characters at most) when the path is "
    "not known. Names process spans. A metric attribute only when export.metrics.attributes "
    "names it",
)
PROCESS_COMMAND_ARGS: Final = _key(
    "process.command_args",
    "list[str]",
    "development",
    _E,
    "argv as exec'd, within probes.process.args limits, redacted",
)
PROCESS_EXIT_CODE: Final = _key(
    "process.exit.code",
    "int",
    "development",
    _EM,
    "Exit code; 128 + signal when a signal killed the process (a shell's $?)",
)
THREAD_ID: Final = _key(
    "thread.id",
    "int",
    "development",
    _E,
    "Thread id (the kernel's pid of the task): the OOM victim thread, a slow syscall's thread",
)
THREAD_NAME: Final = _key(
    "thread.name", "str", "development", _E, "The thread's comm (syscall.slow)"
)

# -- containers and Kubernetes (enrichment) -------------------------------------------------

CONTAINER_ID: Final = _key(
    "container.id", "str", "stable", _E, "Container id, bare 64 hex, from the cgroup path"
)
CONTAINER_RUNTIME: Final = _key(
    "container.runtime",
    "str",
    "development",
    _E,
    "containerd, cri-o, docker or podman, when the cgroup path names the runtime",
    deprecated_by="container.runtime.name",
)
CONTAINER_IMAGE_NAME: Final = _key(
    "container.image.name",
    "str",
    "stable",
    _E,
    "Container's image from the pod spec, without tag or digest",
)
CONTAINER_IMAGE_TAGS: Final = _key(
    "container.image.tags", "list[str]", "stable", _E, "The image's tag, as a one-item list"
)
K8S_POD_UID: Final = _key("k8s.pod.uid", "str", "stable", _E, "Pod uid, from the cgroup path")
K8S_POD_NAME: Final = _key(
    "k8s.pod.name",
    "str",
    "stable",
    _E,
    "Pod name (pod watch). Not a default metric attribute (pods churn: opt in through "
    "export.metrics.attributes)",
)
K8S_NAMESPACE_NAME: Final = _key(
    "k8s.namespace.name", "str", "stable", _EM, "Pod's namespace (pod watch)"
)
K8S_CONTAINER_NAME: Final = _key(
    "k8s.container.name", "str", "stable", _EM, "Container's name in the pod spec (pod watch)"
)
K8S_NODE_NAME: Final = _key(
    "k8s.node.name",
    "str",
    "stable",
    ("event", "resource"),
    "This node (enrichment.kubernetes.nodeName, else $NODE_NAME), when known",
)
K8S_CLUSTER_NAME: Final = _key(
    "k8s.cluster.name",
    "str",
    "stable",
    _R,
    "The cluster's name (export.clusterName, else $K8S_CLUSTER_NAME; the chart's clusterName)",
)
K8S_REPLICASET_NAME: Final = _key(
    "k8s.replicaset.name",
    "str",
    "stable",
    _E,
    "The ReplicaSet that owns the pod (its controller ownerReference)",
)
K8S_DEPLOYMENT_NAME: Final = _key(
    "k8s.deployment.name",
    "str",
    "stable",
    _E,
    "The Deployment that owns the pod's ReplicaSet (read once per ReplicaSet uid, cached)",
)
K8S_STATEFULSET_NAME: Final = _key(
    "k8s.statefulset.name", "str", "stable", _E, "The StatefulSet that owns the pod"
)
K8S_DAEMONSET_NAME: Final = _key(
    "k8s.daemonset.name", "str", "stable", _E, "The DaemonSet that owns the pod"
)
K8S_JOB_NAME: Final = _key("k8s.job.name", "str", "stable", _E, "The Job that owns the pod")
K8S_CRONJOB_NAME: Final = _key(
    "k8s.cronjob.name",
    "str",
    "stable",
    _E,
    "The CronJob that owns the pod's Job (read once per Job uid, cached)",
)
VIGIL_K8S_WORKLOAD_KIND: Final = _key(
    "vigil.k8s.workload.kind",
    "str",
    "vigil",
    _EM,
    "Kind of the pod's top owner: Deployment, StatefulSet, DaemonSet, CronJob, Job, "
    "ReplicaSet (no Deployment), another controller's kind, or Pod for a bare pod. The "
    "conventions have one key per kind but none for 'the workload'; this pair is what "
    "metrics roll pods up to by default",
)
VIGIL_K8S_WORKLOAD_NAME: Final = _key(
    "vigil.k8s.workload.name",
    "str",
    "vigil",
    _EM,
    "Name of the pod's top owner (the pod's own name for a bare pod)",
)
K8S_POD_LABEL_TEMPLATE: Final = _key(
    "k8s.pod.label",
    "str",
    "stable",
    _E,
    "The pod's label <key>, for each key of enrichment.kubernetes.podLabels",
    template=True,
)


def k8s_pod_label(label: str) -> str:
    """The key of pod label `label`: k8s.pod.label.<label>."""
    return f"{K8S_POD_LABEL_TEMPLATE}.{label}"


# -- network (tcp probe) ---------------------------------------------------------------------

NETWORK_TRANSPORT: Final = _key("network.transport", "str", "stable", _E, "tcp")
NETWORK_TYPE: Final = _key(
    "network.type", "str", "stable", _E, "ipv4 or ipv6 (IPv4-mapped IPv6 addresses: ipv4)"
)
NETWORK_LOCAL_ADDRESS: Final = _key(
    "network.local.address", "str", "stable", _E, "Connection's local address"
)
NETWORK_LOCAL_PORT: Final = _key(
    "network.local.port", "int", "stable", _E, "Connection's local port"
)
NETWORK_PEER_ADDRESS: Final = _key(
    "network.peer.address", "str", "stable", _E, "Connection's remote address"
)
NETWORK_PEER_PORT: Final = _key(
    "network.peer.port", "int", "stable", _E, "Connection's remote port"
)
NETWORK_IO_DIRECTION: Final = _key(
    "network.io.direction",
    "str",
    "development",
    _M,
    "transmit or receive: which bytes vigil.tcp.bytes counts",
)
ERROR_TYPE: Final = _key(
    "error.type",
    "str",
    "stable",
    ("event", "span", "metric"),
    "A failed TCP connection's socket error (errno name, e.g. ECONNREFUSED); "
    "a process span's non-zero exit code",
)

# -- vigil: cgroups, policies, rules -------------------------------------------------------

VIGIL_CGROUP_ID: Final = _key(
    "vigil.cgroup.id",
    "int",
    "vigil",
    _EM,
    "cgroup v2 id (the directory's inode number) of the task; enrichment resolves it to "
    "container and pod (metric points keep it only when it cannot be resolved)",
)
VIGIL_CGROUP_PATH: Final = _key(
    "vigil.cgroup.path",
    "str",
    "vigil",
    ("internal",),
    "cgroup v2 path of a cgroup created or removed (cgroup.mkdir/rmdir: they feed the "
    "cgroup table and never reach a sink)",
)
VIGIL_K8S_POD_QOS_CLASS: Final = _key(
    "vigil.k8s.pod.qos_class",
    "str",
    "vigil",
    _E,
    "guaranteed, burstable or besteffort, from the pod's cgroup path",
)
VIGIL_SYSTEMD_UNIT: Final = _key(
    "vigil.systemd.unit",
    "str",
    "vigil",
    _E,
    "Innermost systemd service (<unit>.service) of the cgroup path",
)
VIGIL_POLICY_NAMES: Final = _key(
    "vigil.policy.names",
    "list[str]",
    "vigil",
    _E,
    "Policies that selected the event (only when policies are configured)",
)
VIGIL_RULE_NAME: Final = _key("vigil.rule.name", "str", "vigil", _EM, "The rule that matched")
VIGIL_RULE_SEVERITY: Final = _key(
    "vigil.rule.severity",
    "str",
    "vigil",
    _EM,
    "The matching rule's severity: info, low, medium, high or critical",
)
VIGIL_RULE_POLICY: Final = _key(
    "vigil.rule.policy",
    "str",
    "vigil",
    _EM,
    "The matching rule's policy: namespace/name, or name when cluster-wide",
)
VIGIL_RULE_EVENT_KIND: Final = _key(
    "vigil.rule.event_kind", "str", "vigil", _E, "Kind of the event the rule matched"
)

# -- vigil: checks (check.firing / check.resolved events, vigil.check.status) ----------------

VIGIL_CHECK_NAME: Final = _key(
    "vigil.check.name", "str", "vigil", _EM, "The check that fired or resolved (checks: name)"
)
VIGIL_CHECK_SEVERITY: Final = _key(
    "vigil.check.severity", "str", "vigil", _EM, "The check's severity: info, warning or critical"
)
VIGIL_CHECK_VALUE: Final = _key(
    "vigil.check.value",
    "str",
    "vigil",
    _E,
    "The expression's inputs at the transition, e.g. zombies=6 or exec_rate=42 (baseline 4.1+-0.8)",
)
VIGIL_CHECK_POLICY: Final = _key(
    "vigil.check.policy",
    "str",
    "vigil",
    _EM,
    "The policy the check belongs to (namespace/name, or name when cluster-wide); "
    "absent for node-wide checks",
)
VIGIL_CHECK_SUBJECT: Final = _key(
    "vigil.check.subject",
    "str",
    "vigil",
    _EM,
    "What the check judged: namespace/pod, namespace/workload, cgroup <id> or node",
)
VIGIL_CHECK_WORKLOAD: Final = _key(
    "vigil.check.workload",
    "str",
    "vigil",
    _E,
    "The workload (Deployment, StatefulSet, DaemonSet, Job) of a workload check, "
    "from the pods' generated names",
)
VIGIL_CHECK_DESCRIPTION: Final = _key(
    "vigil.check.description", "str", "vigil", _E, "The check's description, when it has one"
)

# -- vigil: processes ------------------------------------------------------------------------

VIGIL_PROCESS_ARGS_TRUNCATED: Final = _key(
    "vigil.process.args_truncated",
    "bool",
    "vigil",
    _E,
    "true: argv was cut (maxArgs, maxArgLength or maxBytes)",
)
VIGIL_PROCESS_ARGS_UNREADABLE: Final = _key(
    "vigil.process.args_unreadable",
    "bool",
    "vigil",
    _E,
    "true: the kernel could not read argv from the new image",
)
VIGIL_PROCESS_EXIT_SIGNAL: Final = _key(
    "vigil.process.exit.signal", "int", "vigil", _E, "Signal that killed the process"
)
VIGIL_PROCESS_CORE_DUMPED: Final = _key(
    "vigil.process.core_dumped", "bool", "vigil", _E, "true: the killed process dumped core"
)
VIGIL_PROCESS_RUNNING: Final = _key(
    "vigil.process.running",
    "bool",
    "vigil",
    ("span",),
    "true: the process span ended while the process still ran: exported early because "
    "its first child's span was (so children never arrive without their parent), or at "
    "agent shutdown, or export.spans.maxOpen reached",
)
VIGIL_PROCESS_CONTINUATION: Final = _key(
    "vigil.process.continuation",
    "bool",
    "vigil",
    ("span",),
    "true: the rest of a process's life (to its exit, with its status) after its span was "
    "exported early as running; a child of that span, named like it",
)
VIGIL_PROCESS_STATE_NAME: Final = _key(
    "vigil.process.state_name",
    "str",
    "vigil",
    _M,
    "zombie or uninterruptible: the state vigil.process.state counts",
)

# -- vigil: tcp probe ------------------------------------------------------------------------

VIGIL_TCP_DIRECTION: Final = _key(
    "vigil.tcp.direction",
    "str",
    "vigil",
    _EM,
    "client (connect), server (accept) or unknown",
)
VIGIL_TCP_BYTES_SENT: Final = _key(
    "vigil.tcp.bytes_sent",
    "int",
    "vigil",
    _E,
    "Payload bytes sent, retransmissions excluded",
)
VIGIL_TCP_BYTES_RECEIVED: Final = _key(
    "vigil.tcp.bytes_received", "int", "vigil", _E, "Payload bytes received"
)
VIGIL_TCP_RETRANSMITS: Final = _key(
    "vigil.tcp.retransmits",
    "int",
    "vigil",
    _E,
    "Segments the connection retransmitted (the kernel's total_retrans)",
)
VIGIL_TCP_DURATION_NS: Final = _key(
    "vigil.tcp.duration_ns",
    "int",
    "vigil",
    _E,
    "Connection's lifetime from SYN to close, ns (absent when its open was not seen)",
)
VIGIL_TCP_UNTRACKED: Final = _key(
    "vigil.tcp.untracked",
    "bool",
    "vigil",
    _E,
    "true: the open was not seen (older than the agent, or evicted): no duration",
)
VIGIL_TCP_OWNER_UNKNOWN: Final = _key(
    "vigil.tcp.owner_unknown",
    "bool",
    "vigil",
    _E,
    "true: no connect or accept was seen, so no owner process (no process.pid)",
)
VIGIL_TCP_FAILED: Final = _key(
    "vigil.tcp.failed",
    "bool",
    "vigil",
    _E,
    "true: closed before being established (refused, timed out, reset)",
)

# -- vigil: syscalls probe -------------------------------------------------------------------

VIGIL_SYSCALL_NAME: Final = _key(
    "vigil.syscall.name",
    "str",
    "vigil",
    _EM,
    "Syscall name (x86_64); syscall_<nr> for numbers vigil does not know",
)
VIGIL_SYSCALL_DURATION_NS: Final = _key(
    "vigil.syscall.duration_ns", "int", "vigil", _E, "Time from syscall entry to exit, ns"
)
VIGIL_SYSCALL_ERRNO: Final = _key(
    "vigil.syscall.errno",
    "int",
    "vigil",
    _E,
    "A failed call's error as the kernel returned it, positive (512-516: the kernel's "
    "internal restart codes)",
)

# -- vigil: oom probe (memory figures in bytes; the kernel reports kB) -----------------------

VIGIL_OOM_TOTAL_VM: Final = _key(
    "vigil.oom.total_vm", "int", "vigil", _E, "Victim's virtual memory size, bytes"
)
VIGIL_OOM_ANON_RSS: Final = _key(
    "vigil.oom.anon_rss", "int", "vigil", _E, "Victim's resident anonymous memory, bytes"
)
VIGIL_OOM_FILE_RSS: Final = _key(
    "vigil.oom.file_rss", "int", "vigil", _E, "Victim's resident file-backed memory, bytes"
)
VIGIL_OOM_SHMEM_RSS: Final = _key(
    "vigil.oom.shmem_rss", "int", "vigil", _E, "Victim's resident shared memory, bytes"
)
VIGIL_OOM_PGTABLES: Final = _key(
    "vigil.oom.pgtables", "int", "vigil", _E, "Victim's page tables, bytes"
)
VIGIL_OOM_SCORE_ADJ: Final = _key(
    "vigil.oom.score_adj", "int", "vigil", _E, "Victim's oom_score_adj (-1000..1000)"
)
VIGIL_OOM_TRIGGER_PID: Final = _key(
    "vigil.oom.trigger.pid",
    "int",
    "vigil",
    _E,
    "Process whose allocation ran out of memory",
)
VIGIL_OOM_TRIGGER_NAME: Final = _key(
    "vigil.oom.trigger.name", "str", "vigil", _E, "That process's comm"
)
VIGIL_OOM_TRIGGER_CGROUP_ID: Final = _key(
    "vigil.oom.trigger.cgroup.id", "int", "vigil", _E, "That process's cgroup v2 id"
)

# -- vigil: tracepoints probe (subscriptions) -------------------------------------------------

VIGIL_TRACEPOINT_TEMPLATE: Final = _key(
    "vigil.tracepoint",
    "int | str | list[str]",
    "vigil",
    _EM,
    "Field <key> of a subscribed tracepoint's record (events of kind tracepoint.<subsystem>."
    "<event>; on vigil.tracepoint.events the `by` fields): integers as integers, strings as "
    "strings, byte arrays as hex, other integer arrays as lists of decimals",
    template=True,
)
VIGIL_SUBSCRIPTION_TRACEPOINT: Final = _key(
    "vigil.subscription.tracepoint",
    "str",
    "vigil",
    _M,
    "The subscribed tracepoint (subsystem:event) a vigil.tracepoint.* metric point counts",
)


def vigil_tracepoint_field(field: str) -> str:
    """The key of tracepoint field `field`: vigil.tracepoint.<field>."""
    return f"{VIGIL_TRACEPOINT_TEMPLATE}.{field}"


# -- the OTLP resource -------------------------------------------------------------------------

SERVICE_NAME: Final = _key("service.name", "str", "stable", _R, "vigil-agent")
SERVICE_VERSION: Final = _key("service.version", "str", "stable", _R, "vigil's version")
HOST_NAME: Final = _key("host.name", "str", "development", _R, "The host's name (hostname)")
SERVICE_INSTANCE_ID: Final = _key(
    "service.instance.id",
    "str",
    "stable",
    _R,
    "Stable per node, so a restart continues the same series: the node's name, else the "
    "host's name (Prometheus derives `instance` from it)",
)

# -- labels of vigil's own metrics ------------------------------------------------------------

VIGIL_PROBE: Final = _key(
    "vigil.probe", "str", "vigil", _M, "Probe name (vigil.agent.events, .kernel.map_full)"
)
OUTCOME: Final = _key(
    "outcome",
    "str",
    "other",
    _M,
    "What became of a probe's records (vigil.agent.events): accepted, dropped_kernel, "
    "dropped_queue or decode_error",
)
SIGNAL: Final = _key(
    "signal",
    "str",
    "other",
    _M,
    "traces, metrics or logs (vigil.agent.export.failures, .dropped)",
)
REASON: Final = _key(
    "reason",
    "str",
    "other",
    _M,
    "Why: cgroup or pod (vigil.agent.enrichment.misses); queue_full, ended_early, "
    "span_event_limit, ... (vigil.agent.export.dropped)",
)
VIGIL_METRIC_NAME: Final = _key(
    "vigil.metric.name",
    "str",
    "vigil",
    _M,
    "A metric's OTel name (vigil.agent.metrics.overflow, .series, .evicted)",
)
CPU_MODE: Final = _key(
    "cpu.mode", "str", "development", _M, "user or system (process.cpu.time of the agent)"
)
OTEL_METRIC_OVERFLOW: Final = _key(
    "otel.metric.overflow",
    "bool",
    "other",
    _M,
    "true: the one point holding what exceeded a metric's cardinality limit (the "
    "OpenTelemetry metrics SDK specification's key, not a registry one)",
)


ATTRIBUTES: Final[tuple[Attribute, ...]] = tuple(_REGISTERED)
BY_NAME: Final[Mapping[str, Attribute]] = {attribute.name: attribute for attribute in ATTRIBUTES}
_TEMPLATES: Final[tuple[tuple[str, Attribute], ...]] = tuple(
    (attribute.name + ".", attribute) for attribute in ATTRIBUTES if attribute.template
)


def find(key: str) -> Attribute | None:
    """The registry entry of `key` (a template's for `k8s.pod.label.app`); None if unknown."""
    found = BY_NAME.get(key)
    if found is not None and not found.template:
        return found
    for prefix, attribute in _TEMPLATES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return attribute
    return None


def _fits(value: object, type_: ValueType) -> bool:
    if " | " in type_:
        return any(_fits(value, part) for part in type_.split(" | "))  # type: ignore[arg-type]
    if type_ == "list[str]":
        return isinstance(value, list) and all(type(item) is str for item in value)
    return type(value).__name__ == type_  # bool is not int, int is not float


def problems(attributes: Mapping[str, object]) -> list[str]:
    """What is wrong with these attributes: unknown keys and values of the wrong type."""
    found = []
    for key, value in attributes.items():
        attribute = find(key)
        if attribute is None:
            found.append(f"{key}: not in vigil.api.attributes")
        elif not _fits(value, attribute.type):
            found.append(f"{key}: {type(value).__name__} {value!r}, registered as {attribute.type}")
    return found


# -- README's table ---------------------------------------------------------------------------

README_BEGIN: Final = "<!-- attributes:begin -->"
README_END: Final = "<!-- attributes:end -->"
README_COMMAND: Final = "python -m vigil.api.attributes --readme README.md"


def markdown_table() -> str:
    """The registry as a Markdown table (README's, between the attribute markers)."""
    lines = [
        "| key | type | status | on | description |",
        "|---|---|---|---|---|",
    ]
    for attribute in ATTRIBUTES:
        name = f"{attribute.name}.<key>" if attribute.template else attribute.name
        status: str = attribute.status
        if attribute.deprecated_by:
            status += f" (deprecated: {attribute.deprecated_by})"
        description = attribute.description.replace("|", "\\|")
        value_type = attribute.type.replace("|", "\\|")
        lines.append(
            f"| `{name}` | {value_type} | {status} | {', '.join(attribute.on)} | {description} |"
        )
    return "\n".join(lines) + "\n"


def with_table(readme: str) -> str:
    """`readme` with the generated table between the markers (ValueError without them)."""
    return readme_tables.with_table(readme, markdown_table(), begin=README_BEGIN, end=README_END)


def main(argv: list[str] | None = None) -> int:
    return readme_tables.table_main(
        argv,
        prog="python -m vigil.api.attributes",
        description="vigil's attribute keys",
        table=markdown_table,
        rewrite=with_table,
        what="attribute",
    )


if __name__ == "__main__":
    raise SystemExit(main())
