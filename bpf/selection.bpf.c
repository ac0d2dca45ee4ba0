/* selection: which cgroups the agent observes (in-kernel filtering).
 *
 * Compiled first into every probe module (agent/kernel/compiler.py,
 * module_sources), so every probe can call vigil_selected(). When policies
 * select only some pods, the agent (agent/selection/kernel.py) writes a
 * verdict for every cgroup it knows into vigil_selected_cgroups (1 selected,
 * 0 not) and sets the mode to VIGIL_SELECT_LISTED: an unselected cgroup then
 * costs one map lookup, not an event. A cgroup without a verdict is let
 * through: it is newer than the agent's last look (a container that just
 * started, a pod the API has not reported yet), and user space drops its
 * events if they turn out unselected, rather than losing the first events of
 * a selected container. The cgroups probe (metadata) never filters.
 */
#include "vigil.h"

#define VIGIL_SELECT_ALL 0
#define VIGIL_SELECT_LISTED 1
#define VIGIL_SELECTED_MAX 65536

BPF_ARRAY(vigil_selection_mode, u32, 1);
BPF_HASH(vigil_selected_cgroups, u64, u8, VIGIL_SELECTED_MAX);

static __always_inline bool vigil_selected(u64 cgroup_id)
{
    int zero = 0;
    u32 *mode = vigil_selection_mode.lookup(&zero);
    u8 *verdict;

    if (!mode || *mode == VIGIL_SELECT_ALL)
        return true;
    verdict = vigil_selected_cgroups.lookup(&cgroup_id);
    return !verdict || *verdict != 0;
}
