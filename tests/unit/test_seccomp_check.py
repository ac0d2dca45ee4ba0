"""doctor's seccomp check: a filter that refuses bpf() is named, with the fix."""

from __future__ import annotations

from pathlib import Path

from vigil.agent.kernel.features import seccomp_check, seccomp_mode


def test_mode_is_read_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n")
    assert seccomp_mode(status) == 2
    status.write_text("Name:\tx\n")
    assert seccomp_mode(status) is None


def test_a_filter_refusing_bpf_with_cap_bpf_is_reported() -> None:
    check = seccomp_check(ringbuf_ok=False, can_load=True, mode=2)
    assert not check.ok
    assert "seccomp-vigil-agent.json" in check.detail
    assert "CAP_SYS_ADMIN" in check.detail


def test_no_filter_or_another_cause_is_not_blamed_on_seccomp() -> None:
    assert seccomp_check(ringbuf_ok=False, can_load=True, mode=0).ok
    assert seccomp_check(ringbuf_ok=False, can_load=False, mode=2).ok  # lacking caps instead
    assert seccomp_check(ringbuf_ok=True, can_load=True, mode=2).ok
