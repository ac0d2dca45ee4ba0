"""Which events the policies select: in the kernel (cgroup verdicts) and after enrichment."""
