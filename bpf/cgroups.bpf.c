/* cgroups: every cgroup v2 directory the moment it is created or removed.
 *
 * The agent keeps cgroup id -> path from these (plus one scan at start), so
 * events of a container that lives for milliseconds are still attributed.
 * Only the default (v2) hierarchy is reported: cgroup v1 hierarchies have
 * their own ids, which bpf_get_current_cgroup_id() never returns.
 */
#include "vigil.h"

#define CGROUP_MKDIR 1
#define CGROUP_RMDIR 2
#define CGROUP_PATH_MAX 1024 /* a power of two: lengths are masked with it */
#define CGROUP_WAKE_BYTES (64 * 1024)

struct cgroup_record {
    u64 ts;
    u64 id; /* cgroup id = inode of the cgroup directory */
    u32 kind;
    u32 path_len; /* bytes of path, with its NUL */
    char path[CGROUP_PATH_MAX];
};

BPF_RINGBUF_OUTPUT(cgroup_events, 64);
BPF_PERCPU_ARRAY(cgroup_scratch, struct cgroup_record, 1);
VIGIL_DROP_COUNTERS(cgroup_drops);

static __always_inline int cgroup_emit(u32 kind, int root, u64 id, const char *path)
{
    int zero = 0;
    struct cgroup_record *rec;
    u32 len;
    long n;

    if (root != 0)
        return 0; /* a cgroup v1 hierarchy */
    rec = cgroup_scratch.lookup(&zero);
    if (!rec)
        return 0;
    rec->ts = bpf_ktime_get_ns();
    rec->id = id;
    rec->kind = kind;
    n = bpf_probe_read_kernel_str(rec->path, CGROUP_PATH_MAX, path);
    /* Keep the bounded length in a register: the verifier forgets bounds of
     * values read back from the map. */
    len = n > 0 ? (u32)n & (CGROUP_PATH_MAX - 1) : 0;
    rec->path_len = len;
    if (cgroup_events.ringbuf_output(rec, offsetof(struct cgroup_record, path) + len,
                                     CGROUP_WAKE_BYTES) < 0)
        cgroup_drops.increment(VIGIL_DROP_RINGBUF);
    return 0;
}

int vigil_cgroup_mkdir(struct tracepoint__cgroup__cgroup_mkdir *args)
{
    return cgroup_emit(CGROUP_MKDIR, args->root, args->id,
                       (const char *)args + (args->data_loc_path & 0xFFFF));
}

int vigil_cgroup_rmdir(struct tracepoint__cgroup__cgroup_rmdir *args)
{
    return cgroup_emit(CGROUP_RMDIR, args->root, args->id,
                       (const char *)args + (args->data_loc_path & 0xFFFF));
}
