/* vigil.h: what every vigil probe shares.
 *
 * Compiled by bcc together with the probes' *.bpf.c files. Two rules hold
 * everywhere:
 *   - Kernel-internal structs are never dereferenced through header layouts
 *     (the headers bcc compiles against need not match the running kernel).
 *     VIGIL_READ() reads a member at the offset the agent computed from the
 *     kernel's BTF and passed as -DVIGIL_OFF_<struct>__<member>=N, together
 *     with -DVIGIL_SIZE_<struct>__<member>=N; the size is checked against the
 *     destination at compile time.
 *   - Every ring buffer record is submitted through VIGIL_SUBMIT(), which
 *     counts failed reservations in a per-CPU counter (nothing is lost
 *     silently) and wakes the reader only when the buffer passes a fill
 *     threshold (a wakeup costs ~20 us in the traced task; the reader drains
 *     on a short timer otherwise).
 */
#ifndef VIGIL_H
#define VIGIL_H

#include <uapi/linux/ptrace.h>

#ifndef BPF_RB_NO_WAKEUP
#define BPF_RB_NO_WAKEUP (1ULL << 0)
#define BPF_RB_FORCE_WAKEUP (1ULL << 1)
#endif
#ifndef BPF_RB_AVAIL_DATA
#define BPF_RB_AVAIL_DATA 0
#endif

#define VIGIL_COMM_LEN 16

/* Read a kernel struct member at its BTF offset: VIGIL_READ(dst, ptr, task_struct__tgid). */
#define VIGIL_READ(dst, base, field)                                              \
    ({                                                                            \
        _Static_assert(sizeof(dst) == VIGIL_SIZE_##field,                         \
                       "destination size differs from the kernel's " #field);     \
        bpf_probe_read_kernel(&(dst), sizeof(dst),                                \
                              (const void *)((const char *)(base) + VIGIL_OFF_##field)); \
    })

/* Batched wakeups.
 *
 * Probes emit with bcc's method syntax, passing the wake threshold in bytes
 * where the flags would go:
 *     if (my_events.ringbuf_output(&rec, size, cfg->wake_bytes) < 0)
 *         my_drops.increment(VIGIL_DROP_RINGBUF);
 * bcc rewrites that call into bpf_ringbuf_output(<map fd>, ...) and compiles
 * the result once more; the macro below routes the rewritten call through
 * vigil_ringbuf_output(), which asks the map how much data is waiting and
 * wakes the reader only past the threshold. (bcc offers no map method for
 * bpf_ringbuf_query, and map references inside macros are not rewritten.) */
static __always_inline long vigil_ringbuf_output(void *ringbuf, void *data, u64 size,
                                                 u64 wake_bytes)
{
    long (*output)(void *, void *, u64, u64) = (void *)BPF_FUNC_ringbuf_output;
    u64 waiting = bpf_ringbuf_query(ringbuf, BPF_RB_AVAIL_DATA);
    return output(ringbuf, data, size,
                  waiting + size >= wake_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}
#define bpf_ringbuf_output(map, data, size, wake_bytes) \
    vigil_ringbuf_output((map), (data), (size), (wake_bytes))

/* Slots of every probe's per-CPU drop counter array. */
#define VIGIL_DROP_RINGBUF 0 /* ring buffer full: record lost */
#define VIGIL_DROP_MAP_FULL 1 /* a bounded map refused an insert */
#define VIGIL_DROP_SLOTS 2
#define VIGIL_DROP_COUNTERS(name) BPF_PERCPU_ARRAY(name, u64, VIGIL_DROP_SLOTS)

/* cgroup v2 ids read from kernel structs, for contexts where the task of
 * interest is not `current` (bpf_get_current_cgroup_id() covers that case).
 * The id is the cgroup's kernfs node id: the inode of its directory. Each
 * helper exists when the probes of the module asked for the members it reads;
 * every one returns 0 when a pointer on the way is NULL. */
#if defined(VIGIL_OFF_cgroup__kn) && defined(VIGIL_OFF_kernfs_node__id)
static __always_inline u64 vigil_cgroup_id(void *cgrp)
{
    void *kn = 0;
    u64 id = 0;

    if (!cgrp)
        return 0;
    VIGIL_READ(kn, cgrp, cgroup__kn);
    if (!kn)
        return 0;
    VIGIL_READ(id, kn, kernfs_node__id);
    return id;
}

#if defined(VIGIL_OFF_task_struct__cgroups) && defined(VIGIL_OFF_css_set__dfl_cgrp)
/* task->cgroups->dfl_cgrp: the task's cgroup in the v2 (default) hierarchy. */
static __always_inline u64 vigil_task_cgroup_id(void *task)
{
    void *css_set = 0, *cgrp = 0;

    VIGIL_READ(css_set, task, task_struct__cgroups);
    if (!css_set)
        return 0;
    VIGIL_READ(cgrp, css_set, css_set__dfl_cgrp);
    return vigil_cgroup_id(cgrp);
}
#endif

#if defined(VIGIL_OFF_cgroup__root) && defined(VIGIL_OFF_cgroup_root__hierarchy_id)
/* A struct cgroup from any hierarchy: its id when it is a v2 cgroup, else 0
 * (v1 hierarchies number their cgroups in another space). */
static __always_inline u64 vigil_cgroup_v2_id(void *cgrp)
{
    void *root = 0;
    int hierarchy = -1;

    VIGIL_READ(root, cgrp, cgroup__root);
    VIGIL_READ(hierarchy, root, cgroup_root__hierarchy_id);
    return hierarchy == 0 ? vigil_cgroup_id(cgrp) : 0;
}

/* Probes that keep values per cgroup (runqlat, process_state) retire a cgroup
 * when its directory is removed: their cgroup_rmdir program marks it in their
 * "retired" map if they hold values for it, and the agent reports those values
 * once more, then deletes both entries (agent/probes/cgroup_maps.py).
 *
 *     static __always_inline void myprobe_retire(u64 cgroup_id) { ...maps... }
 *     VIGIL_ON_CGROUP_RMDIR(vigil_myprobe_rmdir, myprobe_retire)
 *
 * defines that program, `vigil_myprobe_rmdir`, for the probe's Hook on
 * raw_tracepoint cgroup:cgroup_rmdir; it calls `retire` with the id of every
 * removed cgroup v2 directory. The map calls stay in the probe's file: bcc
 * rewrites `map.lookup(...)` only where it is spelled out there (in a macro or
 * a macro's argument it stops with "cannot use map function inside a macro",
 * and a map passed to a helper by address reaches the verifier as a scalar).
 *
 * Raw, TP_PROTO(struct cgroup *cgrp, const char *path): the classic form's
 * argument struct would clash with the cgroups probe's, which reads the
 * classic form for the path, when both are compiled into one module. */
#define VIGIL_ON_CGROUP_RMDIR(program, retire)                                  \
    int program(struct bpf_raw_tracepoint_args *ctx)                            \
    {                                                                           \
        u64 cgroup_id = vigil_cgroup_v2_id((void *)ctx->args[0]);               \
                                                                                \
        if (cgroup_id) /* else a cgroup v1 hierarchy: ids of another space */   \
            retire(cgroup_id);                                                  \
        return 0;                                                               \
    }
#endif
#endif

/* Log2 histograms, shared with agent/telemetry/histograms.py: value v goes to
 *   slot 0 when v <= 1, slot k when 2^(k-1) < v <= 2^k (clamped to the last),
 * which is exactly an OpenTelemetry explicit-bucket histogram with bounds
 * 1, 2, 4, ... (buckets are upper-inclusive there too). */
#define VIGIL_LOG2_SLOTS 48

/* Clamp an array index to the last slot IN the register that indexes. A C clamp
 * (`bits < N ? bits : N - 1`) lets clang compare a zero-extended copy and index
 * with the original: 6.1's verifier then sees an unbounded index and refuses the
 * program ("R2 unbounded memory access"; measured on Debian 6.1.0-57 by
 * `make test-kernels`), while 6.12 and later track the copy. */
static __always_inline u64 vigil_slot_bound(u64 slot)
{
    asm volatile("if %[s] <= %[last] goto +1\n\t%[s] = %[last]"
                 : [s] "+r"(slot)
                 : [last] "i"(VIGIL_LOG2_SLOTS - 1));
    return slot;
}

static __always_inline u32 vigil_log2_slot(u64 v)
{
    u32 bits = 0;
    if (v <= 1)
        return 0;
    v -= 1; /* the slot is now the bit length of v */
    if (v >> 32) { v >>= 32; bits += 32; }
    if (v >> 16) { v >>= 16; bits += 16; }
    if (v >> 8) { v >>= 8; bits += 8; }
    if (v >> 4) { v >>= 4; bits += 4; }
    if (v >> 2) { v >>= 2; bits += 2; }
    if (v >> 1) { v >>= 1; bits += 1; }
    bits += (u32)v;
    return vigil_slot_bound(bits);
}

/* Tracepoint subscriptions (the `tracepoints` probe). Their programs are
 * generated from each event's format file (agent/probes/tracepoint_gen.py
 * fills bpf/tracepoint.bpf.c.in); what they share is here.
 *
 * Every streamed record starts with this header; the subscription's fields
 * follow at offsets the generator chose (8-byte values first, then byte
 * arrays rounded to 8), the same layout its decoder reads. */
struct vigil_tp_header {
    u64 ts;           /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    u64 cgroup_id;    /* bpf_get_current_cgroup_id() */
    u32 tgid;         /* process id */
    u32 pid;          /* thread id */
    char comm[VIGIL_COMM_LEN];
    u32 subscription; /* index of the subscription in the probe's settings */
    u32 reserved;
};

/* A per-CPU budget of `limit` events per second (one-second windows). */
struct vigil_rate {
    u64 window_ns;
    u64 count;
};

static __always_inline bool vigil_rate_allow(struct vigil_rate *rate, u64 now, u64 limit)
{
    if (now - rate->window_ns >= 1000000000ULL) {
        rate->window_ns = now;
        rate->count = 0;
    }
    if (rate->count >= limit)
        return false;
    rate->count++;
    return true;
}

/* Where a __data_loc field's data starts: the u32 at `offset` holds
 * (length << 16 | offset from the record's start). __rel_loc counts the
 * offset from the end of that u32 instead. */
#define VIGIL_TP_DATA_LOC(ctx, offset) \
    ((const char *)(ctx) + (*(const u32 *)((const char *)(ctx) + (offset)) & 0xFFFF))
#define VIGIL_TP_REL_LOC(ctx, offset) \
    ((const char *)(ctx) + (offset) + 4 + (*(const u32 *)((const char *)(ctx) + (offset)) & 0xFFFF))
#define VIGIL_TP_LOC_LEN(ctx, offset) (*(const u32 *)((const char *)(ctx) + (offset)) >> 16)

#endif /* VIGIL_H */
