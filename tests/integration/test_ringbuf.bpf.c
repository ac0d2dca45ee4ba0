/* Records of many sizes for the ring buffer reader's test (not part of the agent).
 *
 * On each getppid() of the target process: record n (n = 0, 1, ...) is
 * discarded when n % 5 == 0 (reserved, then given back), else it is written
 * with size 4 + (n * 37) % 200 bytes: n as a u32, then bytes (n + i) & 0xff
 * for i = 4 .. size - 1. Sizes that are not multiples of 8 and a one-page
 * buffer make the reader round, skip and wrap around. Failed writes count in
 * test_state[2].
 */
#define TEST_MAX 256

struct test_buf {
    u8 bytes[TEST_MAX];
};

struct test_discarded {
    u64 seq;
    u64 pad[2];
};

BPF_RINGBUF_OUTPUT(test_ring, 1);
BPF_ARRAY(test_state, u64, 3); /* target tgid, next n, failed writes */
BPF_PERCPU_ARRAY(test_scratch, struct test_buf, 1);

int test_ring_emit(void *ctx)
{
    int zero = 0, one = 1, two = 2;
    u64 *target = test_state.lookup(&zero), *next = test_state.lookup(&one);
    u64 *failed = test_state.lookup(&two);
    u8 *buf = (u8 *)test_scratch.lookup(&zero);
    u64 n;
    u32 size, i;

    if (!target || !next || !failed || !buf || *target != bpf_get_current_pid_tgid() >> 32)
        return 0;
    /* One target thread calls getppid() in a loop: a plain increment is enough.
     * (__sync_fetch_and_add whose result is used is BPF_FETCH, Linux >= 5.12:
     * 5.10 refuses the program with EINVAL, found by `make test-kernels`.) */
    n = *next;
    *next = n + 1;
    if (n % 5 == 0) {
        struct test_discarded *rec = test_ring.ringbuf_reserve(sizeof(struct test_discarded));
        if (!rec) {
            __sync_fetch_and_add(failed, 1);
            return 0;
        }
        rec->seq = n;
        test_ring.ringbuf_discard(rec, 0);
        return 0;
    }
    size = 4 + (n * 37) % 200;
    *(u32 *)buf = n;
    for (i = 4; i < TEST_MAX; i++)
        buf[i] = (n + i) & 0xff;
    asm volatile("" : "+r"(size)); /* keep the mask: the verifier needs it */
    size &= TEST_MAX - 1;
    if (test_ring.ringbuf_output(buf, size, 0) < 0)
        __sync_fetch_and_add(failed, 1);
    return 0;
}
