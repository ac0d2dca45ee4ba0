/* selection: which cgroups the agent observes (in-kernel filtering).
 *
 * Compiled first into every probe module (agent/kernel/compiler.py,
 * module_sources), so every probe can call vigil_selected(). When policies
 * select only some pods, the agent writes their cgroup ids into
 * vigil_selected_cgroups and sets the mode to VIGIL_SELECT_LISTED: an
 * unselected cgroup then costs one map lookup, not an event. The cgroups
 * probe (metadata) never filters.
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

    if (!mode || *mode == VIGIL_SELECT_ALL)
        return true;
    return vigil_selected_cgroups.lookup(&cgroup_id) != 0;
}
