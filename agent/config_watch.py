"""Watch the agent's config file and hand each new version over.

A Kubernetes ConfigMap volume updates by writing a new timestamped directory
and renaming the ``..data`` symlink over the old one; the file the agent
reads (``config.yaml -> ..data/config.yaml``) never changes in place. So the
watcher watches the file's *directory* with inotify (through ctypes: no
dependency) and, on any change there, re-reads the file and compares its
content with the last version handed over. A timer re-reads it every
``poll_seconds`` too, which covers what inotify cannot see (a symlink into
another directory, a filesystem without inotify).

A version is handed over only once two reads ``settle_seconds`` apart agree,
so a file caught in the middle of an in-place write is never applied. A file
that disappears keeps the current config (a warning says so).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


# <sys/inotify.h>
_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_WATCH_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
)


class _Inotify:
    """A non-blocking inotify descriptor watching directories; None when unavailable."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add_watch.restype = ctypes.c_int
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd: int = fd
        self._watched: set[Path] = set()

    def watch(self, directory: Path) -> None:
        if directory in self._watched:
            return
        if self._add_watch(self.fd, os.fsencode(directory), _WATCH_MASK) < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_add_watch {directory}: {os.strerror(code)}")
        self._watched.add(directory)

    def drain(self) -> None:
        """Discard pending events: any event only means "look at the file again"."""
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise

    def close(self) -> None:
        os.close(self.fd)


class ConfigWatcher:
    """Calls ``apply(text)`` on a thread of its own for every new content of ``path``."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[str], object],
        *,
        baseline: str | None = None,
        poll_seconds: float = 1.0,
        settle_seconds: float = 0.02,
        use_inotify: bool = True,
    ) -> None:
        self.path = Path(path)
        self._apply = apply
        self._last = baseline
        self._poll_seconds = poll_seconds
        self._settle_seconds = settle_seconds
        self._use_inotify = use_inotify
        self._stop_read, self._stop_write = os.pipe()
        self._thread: threading.Thread | None = None
        self._inotify: _Inotify | None = None
        self._missing = False
        self.checks = 0  # how often the file was looked at (tests, diagnostics)

    @property
    def uses_inotify(self) -> bool:
        return self._inotify is not None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ConfigWatcher already started")
        try:
            if self._use_inotify:
                self._inotify = _Inotify()
                self._watch_directories()
        except OSError as exc:
            log.info(
                "config %s: inotify unavailable (%s); polling every %.1fs",
                self.path,
                exc,
                self._poll_seconds,
            )
            if self._inotify is not None:
                self._inotify.close()
            self._inotify = None
        if self._last is None:
            self._last = self._read()
        self._thread = threading.Thread(target=self._run, name="vigil-config-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_write, b"x")
            self._thread.join()
            self._thread = None
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        for fd in (self._stop_read, self._stop_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_read = self._stop_write = -1

    def _watch_directories(self) -> None:
        assert self._inotify is not None
        # The directory named (a ConfigMap's ..data swap happens there) and the
        # one the file really lives in, when a symlink leads elsewhere.
        self._inotify.watch(self.path.parent.absolute())
        try:
            real = self.path.resolve(strict=True).parent
        except OSError:
            return
        if real != self.path.parent.absolute():
            try:
                self._inotify.watch(real)
            except OSError as exc:
                log.debug("config %s: not watching %s: %s", self.path, real, exc)

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        readable = [self._stop_read]
        if self._inotify is not None:
            readable.append(self._inotify.fd)
        while True:
            ready, _, _ = select.select(readable, [], [], self._poll_seconds)
            if self._stop_read in ready:
                return
            if self._inotify is not None and self._inotify.fd in ready:
                self._inotify.drain()
            try:
                self.check()
            except Exception:
                log.exception("config %s: checking for changes failed; will retry", self.path)

    def check(self) -> bool:
        """Look at the file now; hand a new, settled content over. True if one was."""
        self.checks += 1
        text = self._read()
        if text is None or text == self._last:
            return False
        while True:  # a writer may still be at it: wait until two reads agree
            if self._wait_stop(self._settle_seconds):
                return False
            again = self._read()
            if again is None:
                return False
            if again == text:
                break
            text = again
        if text == self._last:
            return False  # back to what is in force (e.g. truncated, then rewritten)
        self._last = text
        if self._inotify is not None:
            try:
                self._watch_directories()  # the symlink may lead somewhere new
            except OSError as exc:
                log.debug("config %s: re-watching failed: %s", self.path, exc)
        self._apply(text)
        return True

    def _wait_stop(self, seconds: float) -> bool:
        ready, _, _ = select.select([self._stop_read], [], [], seconds)
        return bool(ready)

    def _read(self) -> str | None:
        try:
            text = self.path.read_text()
        except OSError as exc:
            if not self._missing:
                log.warning(
                    "config %s cannot be read (%s); keeping the current config",
                    self.path,
                    exc.strerror,
                )
                self._missing = True
            return None
        if self._missing:
            log.info("config %s is readable again", self.path)
            self._missing = False
        return text
