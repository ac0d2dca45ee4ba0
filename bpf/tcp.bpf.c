/* tcp: one record per TCP connection, when it closes.
 *
 *   sock:inet_sock_set_state (raw)
 *       CLOSE -> SYN_SENT      active open, in connect(): the caller owns it
 *       * -> SYN_RECV          passive open, in softirq: the owner is not known yet
 *       * -> CLOSE             the record: addresses, bytes, duration, owner
 *   syscalls:sys_exit_accept4, syscalls:sys_exit_accept
 *                              the process that accept()ed a connection owns it
 *   tcp:tcp_retransmit_skb     retransmitted segments, counted per cgroup
 *
 * Closes happen in softirq context, where the current task is whoever was
 * interrupted: the owner (pid, comm, cgroup) is captured at open/accept time
 * and kept per socket in tcp_conns, an LRU (sockets are unbounded keys).
 *
 * Decisions, in one place:
 *   - A connection whose open was not seen (older than the agent, or evicted
 *     from the LRU) is still reported at close with everything the socket
 *     itself knows: addresses, bytes (the kernel counts from the start), and
 *     the socket's cgroup (the creator's, inherited by accepted sockets from
 *     their listener); TCP_F_OPEN_SEEN is clear.
 *   - Connections that never got established (SYN_SENT -> CLOSE: refused or
 *     timed-out connects; SYN_RECV -> CLOSE) are reported too, with sk_err.
 *   - The full socket reaches CLOSE when it enters TIME_WAIT (the kernel hands
 *     the 4-tuple to a small timewait socket): the record is sent then, not
 *     when TIME_WAIT expires. LISTEN -> CLOSE (a listener) is not a connection.
 *   - Selection (vigil_selected) is decided when the owner becomes known:
 *     connect() for clients, the listener's cgroup at SYN_RECV, re-decided
 *     with the acceptor's cgroup at accept(). Unselected sockets are not kept.
 *
 * Retransmits per cgroup follow the kernel's own per-socket count
 * (tcp_sock.total_retrans, what TcpRetransSegs also counts): each retransmit
 * event adds what that count grew by since the socket was last seen, and the
 * close adds the rest (SYN-ACK retransmits reach the count without the event).
 * Counting events instead would disagree with it: the tracepoint also fires
 * for attempts that sent nothing, and its err does not tell those apart from
 * transmits that failed after being counted.
 *
 * Bytes are exact application payload: tcp_sock.bytes_sent counts payload
 * including retransmissions, so bytes_retrans is subtracted; bytes_received
 * advances with rcv_nxt, which also steps over a received FIN, so one is taken
 * off when the socket saw a FIN (SOCK_DONE). bytes_acked is not used: it
 * counts the SYN on active opens and the FIN once acked.
 */
#include "vigil.h"

#define TCP_IPPROTO_TCP 6
#define TCP_AF_INET 2
#define TCP_AF_INET6 10

/* include/net/tcp_states.h (also the tracepoint's print format) */
#define TCP_ST_SYN_SENT 2
#define TCP_ST_SYN_RECV 3
#define TCP_ST_CLOSE 7
#define TCP_ST_LISTEN 10

/* enum sock_flags: SOCK_DEAD = 0, SOCK_DONE = 1 (tcp_fin() sets it) */
#define TCP_SOCK_DONE 1

#define TCP_DIR_UNKNOWN 0
#define TCP_DIR_CLIENT 1
#define TCP_DIR_SERVER 2

#define TCP_F_OWNER_KNOWN (1 << 0) /* pid and comm are the owner's */
#define TCP_F_OPEN_SEEN (1 << 1)   /* start_ns is the open time */

#ifndef TCP_RINGBUF_PAGES
#define TCP_RINGBUF_PAGES 1024
#endif
#ifndef TCP_CONNECTIONS_MAX
#define TCP_CONNECTIONS_MAX 65536
#endif
#ifndef TCP_CGROUPS_MAX
#define TCP_CGROUPS_MAX 16384
#endif

/* Written by the agent; changing these needs no recompile. */
struct tcp_config {
    u64 wake_bytes;  /* wake the reader once this much data is waiting */
    u32 retransmits; /* count retransmissions per cgroup */
    u32 reserved;
};

/* What is known about an open connection before it closes. */
struct tcp_conn {
    u64 start_ns;      /* bpf_ktime_get_ns() at open; 0 when the open was not seen */
    u64 cgroup_id;     /* the owner's cgroup (else the socket's) */
    u32 pid;           /* the owner's tgid, when TCP_F_OWNER_KNOWN */
    u32 retrans_seen;  /* tcp_sock.total_retrans already added to tcp_retransmits */
    u8 direction;      /* TCP_DIR_* */
    u8 flags;          /* TCP_F_* */
    u16 reserved16;
    u32 reserved32;
    char comm[VIGIL_COMM_LEN];
};

/* One ring buffer record per closed connection. The agent's decoder is
 * checked against this layout by a test (tests/integration/test_tcp_probe.py). */
struct tcp_record {
    u64 ts;             /* CLOSE time, CLOCK_MONOTONIC */
    u64 start_ns;       /* open time (TCP_F_OPEN_SEEN) */
    u64 cgroup_id;
    u64 bytes_sent;     /* payload sent once (retransmissions not counted again) */
    u64 bytes_received; /* payload received */
    u64 bytes_retrans;  /* payload retransmitted */
    u32 pid;            /* owner tgid (TCP_F_OWNER_KNOWN) */
    u32 total_retrans;  /* retransmitted segments */
    s32 error;          /* sk_err at close (ECONNREFUSED, ECONNRESET, ETIMEDOUT...), 0 if none */
    u16 family;         /* TCP_AF_INET / TCP_AF_INET6 */
    u16 sport;          /* local port */
    u16 dport;          /* peer port */
    u16 reserved16;
    u8 direction;       /* TCP_DIR_* */
    u8 flags;           /* TCP_F_* */
    u8 oldstate;        /* the state CLOSE was entered from */
    u8 reserved8;
    u8 saddr[16];       /* local address: 4 bytes for IPv4, else 16 */
    u8 daddr[16];       /* peer address */
    char comm[VIGIL_COMM_LEN];
};

BPF_RINGBUF_OUTPUT(tcp_events, TCP_RINGBUF_PAGES);
BPF_ARRAY(tcp_config, struct tcp_config, 1);
VIGIL_DROP_COUNTERS(tcp_drops);
/* struct sock * -> its owner, from open (or accept) to close. */
BPF_TABLE("lru_hash", u64, struct tcp_conn, tcp_conns, TCP_CONNECTIONS_MAX);
/* cgroup id -> retransmitted segments of its sockets, cumulative. An LRU:
 * cgroup ids are never reused and removed cgroups stop counting, so they are
 * the ones evicted when the map is full (their last value was exported). */
BPF_TABLE("lru_hash", u64, u64, tcp_retransmits, TCP_CGROUPS_MAX);

/* The cgroup v2 id a socket was created in (accepted sockets inherit their
 * listener's): sk->sk_cgrp_data.cgroup->kn->id. Readable in any context. */
static __always_inline u64 tcp_socket_cgroup(void *sk)
{
    void *cgrp = 0;

    VIGIL_READ(cgrp, sk, sock__sk_cgrp_data__cgroup);
    return vigil_cgroup_id(cgrp);
}

static __always_inline void tcp_set_owner(struct tcp_conn *conn, u64 cgroup_id)
{
    conn->cgroup_id = cgroup_id;
    conn->pid = bpf_get_current_pid_tgid() >> 32;
    conn->flags |= TCP_F_OWNER_KNOWN;
    bpf_get_current_comm(conn->comm, sizeof(conn->comm));
}

/* A connection opens: remember it, or forget a stale entry when unselected. */
static __always_inline void tcp_open(u64 sk, u8 direction, u64 cgroup_id, bool owner_is_current)
{
    struct tcp_conn conn = {};

    if (!vigil_selected(VIGIL_PROBE_TCP, cgroup_id)) {
        tcp_conns.delete(&sk); /* a socket address reused since a missed close */
        return;
    }
    conn.start_ns = bpf_ktime_get_ns();
    conn.cgroup_id = cgroup_id;
    conn.direction = direction;
    conn.flags = TCP_F_OPEN_SEEN;
    if (owner_is_current)
        tcp_set_owner(&conn, cgroup_id);
    if (tcp_conns.update(&sk, &conn) < 0)
        tcp_drops.increment(VIGIL_DROP_MAP_FULL);
}

static __always_inline struct tcp_config *tcp_settings(void)
{
    int zero = 0;
    return tcp_config.lookup(&zero);
}

/* Add retransmitted segments to the cgroup's counter. */
static __always_inline void tcp_count_retransmits(u64 cgroup_id, u64 segments)
{
    u64 init = 0, *count;

    if (!segments)
        return;
    count = tcp_retransmits.lookup_or_try_init(&cgroup_id, &init);
    if (count)
        __sync_fetch_and_add(count, segments);
    else
        tcp_drops.increment(VIGIL_DROP_MAP_FULL);
}

/* How much total_retrans grew since last seen (it restarts at 0 on disconnect). */
static __always_inline u32 tcp_retrans_growth(struct tcp_conn *conn, u32 total)
{
    u32 growth = total >= conn->retrans_seen ? total - conn->retrans_seen : total;
    conn->retrans_seen = total;
    return growth;
}

/* rec arrives with the addresses, ports and oldstate (bcc defines the
 * tracepoint's struct only for the function it is the argument of). */
static __always_inline void tcp_close(struct tcp_record *rec, u64 sk_key)
{
    void *sk = (void *)sk_key;
    struct tcp_conn *conn = tcp_conns.lookup(&sk_key);
    struct tcp_config *cfg = tcp_settings();
    u64 sent = 0, retrans = 0, received = 0, sk_flags = 0;

    if (!cfg)
        return;
    VIGIL_READ(rec->total_retrans, sk, tcp_sock__total_retrans);
    if (conn) {
        rec->start_ns = conn->start_ns;
        rec->cgroup_id = conn->cgroup_id;
        rec->pid = conn->pid;
        rec->direction = conn->direction;
        rec->flags = conn->flags;
        __builtin_memcpy(rec->comm, conn->comm, sizeof(rec->comm));
        if (cfg->retransmits)
            tcp_count_retransmits(conn->cgroup_id, tcp_retrans_growth(conn, rec->total_retrans));
        tcp_conns.delete(&sk_key);
    } else {
        /* Not seen opening: report what the socket knows. */
        rec->cgroup_id = tcp_socket_cgroup(sk);
        if (!vigil_selected(VIGIL_PROBE_TCP, rec->cgroup_id))
            return;
        if (rec->oldstate == TCP_ST_SYN_SENT)
            rec->direction = TCP_DIR_CLIENT;
        else if (rec->oldstate == TCP_ST_SYN_RECV)
            rec->direction = TCP_DIR_SERVER;
    }

    VIGIL_READ(sent, sk, tcp_sock__bytes_sent);
    VIGIL_READ(retrans, sk, tcp_sock__bytes_retrans);
    VIGIL_READ(received, sk, tcp_sock__bytes_received);
    VIGIL_READ(sk_flags, sk, sock____sk_common__skc_flags);
    VIGIL_READ(rec->error, sk, sock__sk_err);
    rec->bytes_sent = sent > retrans ? sent - retrans : 0;
    if ((sk_flags & (1ULL << TCP_SOCK_DONE)) && received > 0)
        received -= 1; /* the FIN's sequence number */
    rec->bytes_received = received;
    rec->bytes_retrans = retrans;
    rec->ts = bpf_ktime_get_ns();
    if (tcp_events.ringbuf_output(rec, sizeof(*rec), cfg->wake_bytes) < 0)
        tcp_drops.increment(VIGIL_DROP_RINGBUF);
}

/* Raw tracepoint: (sk, oldstate, newstate). Cheaper than the classic one,
 * which formats every field for each of the ~5 state changes per socket
 * before the program runs; here only the changes that matter read the sock. */
int vigil_tcp_state(struct bpf_raw_tracepoint_args *ctx)
{
    u64 sk = ctx->args[0];
    int oldstate = (int)ctx->args[1], newstate = (int)ctx->args[2];
    u16 protocol = 0;

    if (newstate != TCP_ST_SYN_SENT && newstate != TCP_ST_SYN_RECV && newstate != TCP_ST_CLOSE)
        return 0;
    VIGIL_READ(protocol, (void *)sk, sock__sk_protocol);
    if (protocol != TCP_IPPROTO_TCP)
        return 0; /* the tracepoint also serves SCTP and MPTCP */
    if (newstate == TCP_ST_SYN_SENT) {
        if (oldstate == TCP_ST_CLOSE)
            tcp_open(sk, TCP_DIR_CLIENT, bpf_get_current_cgroup_id(), true);
    } else if (newstate == TCP_ST_SYN_RECV) {
        /* From SYN_SENT it is a simultaneous open of a client socket. */
        if (oldstate != TCP_ST_SYN_SENT)
            tcp_open(sk, TCP_DIR_SERVER, tcp_socket_cgroup((void *)sk), false);
    } else if (oldstate != TCP_ST_LISTEN && oldstate != TCP_ST_CLOSE) {
        struct tcp_record rec = {};
        void *s = (void *)sk;
        u16 sport = 0, dport = 0;

        /* inet_sport, not skc_num: the port is unbound (skc_num = 0) before
         * the tracepoint fires on the way to CLOSE. */
        VIGIL_READ(rec.family, s, sock____sk_common__skc_family);
        VIGIL_READ(sport, s, inet_sock__inet_sport);
        VIGIL_READ(dport, s, sock____sk_common__skc_dport);
        rec.sport = bpf_ntohs(sport);
        rec.dport = bpf_ntohs(dport);
        rec.oldstate = oldstate;
        if (rec.family == TCP_AF_INET) {
            VIGIL_READ(*(u32 *)rec.saddr, s, sock____sk_common__skc_rcv_saddr);
            VIGIL_READ(*(u32 *)rec.daddr, s, sock____sk_common__skc_daddr);
        } else if (rec.family == TCP_AF_INET6) {
            VIGIL_READ(rec.saddr, s, sock____sk_common__skc_v6_rcv_saddr);
            VIGIL_READ(rec.daddr, s, sock____sk_common__skc_v6_daddr);
        } else {
            return 0;
        }
        tcp_close(&rec, sk);
    }
    return 0;
}

/* accept() returned fd: its socket's owner is the caller. */
static __always_inline void tcp_accepted(long fd)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    void *files = 0, *fdt = 0, *fds = 0, *file = 0, *sock = 0, *sock_file = 0;
    void *sk = 0;
    u32 max_fds = 0;
    u16 protocol = 0;
    u8 state = 0;
    u64 key, cgroup_id = bpf_get_current_cgroup_id();
    struct tcp_conn *conn, fresh = {};

    if (fd < 0)
        return;
    VIGIL_READ(files, task, task_struct__files);
    if (!files)
        return;
    VIGIL_READ(fdt, files, files_struct__fdt);
    if (!fdt)
        return;
    VIGIL_READ(max_fds, fdt, fdtable__max_fds);
    if ((u64)fd >= max_fds)
        return;
    VIGIL_READ(fds, fdt, fdtable__fd);
    if (!fds || bpf_probe_read_kernel(&file, sizeof(file), (void **)fds + fd) < 0 || !file)
        return;
    VIGIL_READ(sock, file, file__private_data);
    if (!sock)
        return;
    VIGIL_READ(sock_file, sock, socket__file);
    if (sock_file != file)
        return; /* not a socket: another thread replaced the fd meanwhile */
    VIGIL_READ(sk, sock, socket__sk);
    if (!sk)
        return;

    key = (u64)sk;
    conn = tcp_conns.lookup(&key);
    if (conn) {
        if (!vigil_selected(VIGIL_PROBE_TCP, cgroup_id)) {
            tcp_conns.delete(&key);
            return;
        }
        tcp_set_owner(conn, cgroup_id);
        return;
    }
    /* Opened before the agent started, or under an unselected listener: track
     * it from here if it is a TCP connection that has not closed yet. */
    VIGIL_READ(protocol, sk, sock__sk_protocol);
    VIGIL_READ(state, sk, sock____sk_common__skc_state);
    if (protocol != TCP_IPPROTO_TCP || state == TCP_ST_CLOSE ||
        !vigil_selected(VIGIL_PROBE_TCP, cgroup_id))
        return;
    fresh.direction = TCP_DIR_SERVER;
    tcp_set_owner(&fresh, cgroup_id);
    if (tcp_conns.update(&key, &fresh) < 0)
        tcp_drops.increment(VIGIL_DROP_MAP_FULL);
}

int vigil_tcp_accept4(struct tracepoint__syscalls__sys_exit_accept4 *args)
{
    tcp_accepted(args->ret);
    return 0;
}

int vigil_tcp_accept(struct tracepoint__syscalls__sys_exit_accept *args)
{
    tcp_accepted(args->ret);
    return 0;
}

int vigil_tcp_retransmit(struct tracepoint__tcp__tcp_retransmit_skb *args)
{
    struct tcp_config *cfg = tcp_settings();
    u64 sk = (u64)args->skaddr, cgroup_id;
    struct tcp_conn *conn, fresh = {};
    u32 total = 0;
    u16 segs = 0;

    if (!cfg || !cfg->retransmits)
        return 0;
    VIGIL_READ(total, (void *)sk, tcp_sock__total_retrans);
    conn = tcp_conns.lookup(&sk);
    if (conn) {
        tcp_count_retransmits(conn->cgroup_id, tcp_retrans_growth(conn, total));
        return 0;
    }

    /* A connection not seen opening: start following its count from here,
     * and count this event by its own segments if it sent anything. */
    cgroup_id = tcp_socket_cgroup((void *)sk);
    if (!vigil_selected(VIGIL_PROBE_TCP, cgroup_id))
        return 0;
    fresh.cgroup_id = cgroup_id;
    fresh.retrans_seen = total;
    fresh.direction = args->state == TCP_ST_SYN_SENT ? TCP_DIR_CLIENT : TCP_DIR_UNKNOWN;
    if (tcp_conns.update(&sk, &fresh) < 0)
        tcp_drops.increment(VIGIL_DROP_MAP_FULL);
#ifdef TCP_RETRANSMIT_HAS_ERR
    if (args->err)
        return 0; /* newer kernels also trace attempts that failed */
#endif
    /* One skb may carry several segments (TSO): TCP_SKB_CB(skb)->tcp_gso_segs. */
    _Static_assert(VIGIL_SIZE_tcp_skb_cb__tcp_gso_segs == sizeof(segs), "tcp_gso_segs size");
    bpf_probe_read_kernel(&segs, sizeof(segs),
                          (const char *)args->skbaddr + VIGIL_OFF_sk_buff__cb +
                              VIGIL_OFF_tcp_skb_cb__tcp_gso_segs);
    tcp_count_retransmits(cgroup_id, segs ? segs : 1);
    return 0;
}
