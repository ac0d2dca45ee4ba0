/* A lossy link for the tcp probe's retransmit test (not part of the agent).
 *
 * This kernel has no netem qdisc, so packet loss is made with XDP: attached to
 * the receiving end of a veth pair, it drops LOSS_PERCENT of the IPv4 TCP
 * packets at random. The sender gets no local error for them and recovers the
 * way it does on a real network: by retransmitting.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>

#ifndef LOSS_PERCENT
#define LOSS_PERCENT 30
#endif

int test_tcp_loss(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);

    if ((void *)(ip + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto != htons(ETH_P_IP) || ip->protocol != IPPROTO_TCP)
        return XDP_PASS; /* ARP and the rest go through */
    return bpf_get_prandom_u32() % 100 < LOSS_PERCENT ? XDP_DROP : XDP_PASS;
}
