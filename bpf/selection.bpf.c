/* selection: which cgroups each probe observes (in-kernel filtering), and
 * what a cgroup's policies add to capture.
 *
 * Compiled first into every probe module (agent/kernel/compiler.py,
 * module_sources), so every probe can call vigil_selected(). The node's base
 * config decides what is observed for everyone: those probes' bits are set in
 * vigil_selection_mode and they never filter. A probe only policies ask for
 * (a tenant's `tcp: {}`) observes only the cgroups whose entry in
 * vigil_selected_cgroups has its bit set: the agent
 * (agent/selection/kernel.py) writes an entry for every cgroup it knows, so
 * an unselected cgroup costs one map lookup, not an event. A cgroup without
 * an entry is let through: it is newer than the agent's last look (a
 * container that just started, a pod the API has not reported yet), and user
 * space drops its events if they turn out unselected, rather than losing the
 * first events of a selected container. The cgroups probe (metadata) never
 * filters.
 *
 * The entry also carries per-cgroup capture its policies raise
 * (args_max_bytes: argv bytes the process probe reads at exec, the max of the
 * node's and this value).
 */
#include "vigil.h"

/* One bit per probe (agent/selection/kernel.py PROBE_BITS). */
#define VIGIL_PROBE_PROCESS (1 << 0)
#define VIGIL_PROBE_TCP (1 << 1)
#define VIGIL_PROBE_RUNQLAT (1 << 2)
#define VIGIL_PROBE_SYSCALLS (1 << 3)
#define VIGIL_PROBE_OOM (1 << 4)
#define VIGIL_PROBE_PROCESS_STATE (1 << 5)
#define VIGIL_PROBE_TRACEPOINTS (1 << 6)
#define VIGIL_SELECTED_MAX 65536

struct vigil_cgroup_selection {
    u32 probes;         /* VIGIL_PROBE_* bits observed in this cgroup */
    u32 args_max_bytes; /* process: argv bytes to read here; 0 = the node's */
};

/* Probes observed in every cgroup (no lookup). Zero until the agent writes it,
 * which it does before attaching: then every cgroup without an entry passes. */
BPF_ARRAY(vigil_selection_mode, u32, 1);
BPF_HASH(vigil_selected_cgroups, u64, struct vigil_cgroup_selection, VIGIL_SELECTED_MAX);

static __always_inline bool vigil_selected(u32 probe, u64 cgroup_id)
{
    int zero = 0;
    u32 *everywhere = vigil_selection_mode.lookup(&zero);
    struct vigil_cgroup_selection *entry;

    if (!everywhere || (*everywhere & probe))
        return true;
    entry = vigil_selected_cgroups.lookup(&cgroup_id);
    return !entry || (entry->probes & probe);
}

/* Argv bytes a cgroup's policies ask for (0: none beyond the node's). */
static __always_inline u32 vigil_cgroup_args_bytes(u64 cgroup_id)
{
    struct vigil_cgroup_selection *entry = vigil_selected_cgroups.lookup(&cgroup_id);
    return entry ? entry->args_max_bytes : 0;
}
