"""Run `vigil-agent` as a subprocess and read its log as it comes."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time

AGENT = [sys.executable, "-m", "vigil.agent.cli"]


def refused(*args: str) -> bytes:
    """Stderr of `vigil-agent run ARGS`, which must refuse to start (exit code 2: bad input)."""
    result = subprocess.run([*AGENT, "run", *args], capture_output=True, check=False)
    assert result.returncode == 2, result.stderr.decode()
    return result.stderr


class Stderr:
    """The agent's log, read as it comes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self._fd = proc.stderr.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(proc.stderr, selectors.EVENT_READ)
        self.text = b""

    def wait_for(self, needle: bytes, *, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.text.count(needle) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {needle!r} x{count} in {timeout}s: {self.text.decode()}"
            if self._selector.select(remaining):
                chunk = os.read(self._fd, 65536)
                assert chunk, f"agent exited early: {self.text.decode()}"
                self.text += chunk


def wait_for_stderr(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """Stderr of `proc` up to `needle` (the agent logs "ready" once attached)."""
    stderr = Stderr(proc)
    stderr.wait_for(needle, timeout=timeout)
    return stderr.text
