"""The config watcher sees every way a config file is replaced, on real files."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.agent.config_watch import ConfigWatcher
from vigil.api.config import ConfigError, parse_text, read_config

# Long enough that only inotify can explain a quick reaction.
NO_POLL = 60.0


class Recorder:
    def __init__(self) -> None:
        self.versions: queue.Queue[str] = queue.Queue()

    def __call__(self, text: str) -> None:
        self.versions.put(text)

    def next(self, timeout: float = 2.0) -> str:
        return self.versions.get(timeout=timeout)

    def nothing(self, within: float = 0.3) -> bool:
        try:
            extra = self.versions.get(timeout=within)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected version handed over: {extra!r}")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def _watch(path: Path, recorder: Recorder, **kwargs: object) -> Iterator[ConfigWatcher]:
    watcher = ConfigWatcher(path, recorder, **kwargs)  # type: ignore[arg-type]
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.stop()


def test_in_place_write_and_rename_over(tmp_path: Path, recorder: Recorder) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("version: 1\n")
    for watcher in _watch(path, recorder, poll_seconds=NO_POLL):
        assert watcher.uses_inotify
        started = time.monotonic()
        path.write_text("version: 1\n# two\n")
        assert recorder.next() == "version: 1\n# two\n"
        assert time.monotonic() - started < 1.0
        staged = tmp_path / ".config.yaml.tmp"
        staged.write_text("version: 1\n# three\n")
        os.replace(staged, path)
        assert recorder.next() == "version: 1\n# three\n"
        path.write_text("version: 1\n# three\n")  # same content again: nothing new
        assert recorder.nothing()


def test_configmap_symlink_swap(tmp_path: Path, recorder: Recorder) -> None:
    # What the kubelet does: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>,
    # and an update renames a new ..data symlink over the old one.
    first = tmp_path / "..2024_01_01_00_00_00.1"
    first.mkdir()
    (first / "config.yaml").write_text("old\n")
    (tmp_path / "..data").symlink_to(first.name)
    path = tmp_path / "config.yaml"
    path.symlink_to("..data/config.yaml")
    for _ in _watch(path, recorder, poll_seconds=NO_POLL):
        second = tmp_path / "..2024_01_01_00_01_00.2"
        second.mkdir()
        (second / "config.yaml").write_text("new\n")
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.rename(tmp_path / "..data_tmp", tmp_path / "..data")
        (first / "config.yaml").unlink()
        first.rmdir()
        assert recorder.next() == "new\n"
        assert recorder.nothing()


def test_polling_without_inotify(tmp_path: Path, recorder: Recorder) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a\n")
    for watcher in _watch(path, recorder, poll_seconds=0.05, use_inotify=False):
        assert not watcher.uses_inotify
        path.write_text("b\n")
        assert recorder.next() == "b\n"


def test_a_missing_file_keeps_the_config_until_it_is_back(
    tmp_path: Path, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a\n")
    for _ in _watch(path, recorder, poll_seconds=0.05):
        path.unlink()
        assert recorder.nothing()
        assert "cannot be read" in caplog.text
        assert "keeping the current config" in caplog.text
        path.write_text("a\n")  # back as it was: nothing to apply
        assert recorder.nothing()
        path.write_text("b\n")
        assert recorder.next() == "b\n"


def test_a_half_written_file_is_not_handed_over(tmp_path: Path, recorder: Recorder) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("a\n")
    watcher = ConfigWatcher(path, recorder, baseline="a\n", settle_seconds=0.3)
    try:
        with path.open("w") as handle:  # a slow writer, still at it
            handle.write("probes:\n")
            handle.flush()

            # check() sees "probes:\n", waits to settle, sees more: it waits again.
            def finish() -> None:
                time.sleep(0.02)
                handle.write("  process: {enabled: true}\n")
                handle.flush()

            writer = threading.Thread(target=finish)
            writer.start()
            assert watcher.check()
            writer.join()
        assert recorder.next() == "probes:\n  process: {enabled: true}\n"
    finally:
        watcher.stop()


def test_parse_errors_name_the_source_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.yaml: not valid YAML"):
        parse_text("probes: [\n", source="cfg.yaml")
    with pytest.raises(ConfigError, match=r"^cfg\.yaml: probes\.process\.args\.maxArgs: "):
        parse_text("probes: {process: {args: {maxArgs: 0}}}\n", source="cfg.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        read_config(tmp_path / "absent.yaml")
    path = tmp_path / "c.yaml"
    path.write_text("pipeline: {drainIntervalMs: 7}\n")
    config, text = read_config(path)
    assert config.pipeline.drain_interval_ms == 7
    assert text == path.read_text()
