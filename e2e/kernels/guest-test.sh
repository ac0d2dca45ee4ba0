#!/bin/sh
# Runs inside the guest (copied to the writable share by run.py, started by
# guest-init). Results go to /share/results/<uname -r>/, read by run.py:
#   times        guest uptime at test start and after each step
#   vmlinux.btf  this kernel's BTF (run.py checks `doctor --btf` against it on the host)
#   doctor.json  `vigil-agent doctor --json`, doctor.rc
#   probes.err   `vigil-agent run --probes <all>`: which probes attached, which did not and why
#   pytest.log   `pytest -m kernel` (the kernel-marked integration tests), junit.xml, pytest.rc
#                (only the modules holding such tests are collected: the others may
#                import what the guest does not have, e.g. the chart's validators)
rel=$(uname -r); out=/share/results/$rel; rm -rf "$out"; mkdir -p "$out"
exec > "$out/console.log" 2>&1
up() { cut -d' ' -f1 /proc/uptime; }
echo "start $(up)" > "$out/times"
uname -a
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
# The project's machines' layout: cgroup v2 at /sys/fs/cgroup/unified, the memory
# controller on v1 (what the OOM tests limit). A kernel without cgroup v1 memory
# (CONFIG_MEMCG_V1 off) keeps only v2.
mount -t tmpfs cgroup /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/unified /sys/fs/cgroup/memory
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
mount -t cgroup -o memory memory /sys/fs/cgroup/memory || rmdir /sys/fs/cgroup/memory
ip link set lo up
[ -r /share/env ] && . /share/env
export PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/src VIGIL_REQUIRE_BPF=1 HOME=/root
PY=/opt/vigil/bin/python
agent() { $PY -m vigil.agent.cli "$@"; }
cd /src
cp /sys/kernel/btf/vmlinux "$out/vmlinux.btf" 2>/dev/null
agent doctor --json > "$out/doctor.json" 2> "$out/doctor.err"; echo $? > "$out/doctor.rc"
echo "doctor $(up)" >> "$out/times"
agent run --probes "${PROBES:-process,tcp,runqlat,syscalls,oom,process_state}" --output json \
    --duration 1 > /dev/null 2> "$out/probes.err"; echo $? > "$out/probes.rc"
echo "probes $(up)" >> "$out/times"
$PY -m pytest -m kernel -p no:cacheprovider -q -o addopts="" -rfE \
    --junitxml="$out/junit.xml" ${PYTEST_ARGS:-$(grep -l "pytest.mark.kernel" tests/integration/test_*.py)} \
    > "$out/pytest.log" 2>&1
echo $? > "$out/pytest.rc"
echo "pytest $(up)" >> "$out/times"
dmesg > "$out/dmesg.txt"
