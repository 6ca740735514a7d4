"""Real file systems that refuse writes, for the tests of full disks and read-only directories.

A full disk is a small tmpfs filled with a file until writes fail with ENOSPC; a read-only
directory is a read-only bind mount of itself (EROFS). Mounting needs root: without it a full
disk is skipped, and a read-only directory is one without write permission (EACCES), which
root would ignore. Every mount is undone after its test, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import TYPE_CHECKING

import pytest
from helpers_run import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DISK_BYTES = 4 * 1024 * 1024


@contextlib.contextmanager
def mounted_tmpfs(path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs at ``path`` (made if missing), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a disk that can fill up) needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", path], check=True)
    with _unmounted_after(path):
        yield path


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (a directory, made if missing) made read-only, and writable again afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", path, path], check=True)
    with _unmounted_after(path):
        subprocess.run(["mount", "-o", "remount,ro,bind", path], check=True)
        yield path


@contextlib.contextmanager
def _unmounted_after(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        try:  # an ended run's Local supervisor may still be exiting: busy for a moment
            wait_for(
                lambda: (
                    subprocess.run(["umount", path], check=False, capture_output=True).returncode
                    == 0
                ),
                f"{path} to unmount",
            )
        finally:
            if path.is_mount():  # still busy: fail (above), but leave no mount behind
                subprocess.run(["umount", "--lazy", path], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs at ``tmp_path/disk``, unmounted after the test whatever its outcome."""
    with mounted_tmpfs(tmp_path / "disk") as disk:
        yield disk


def fill(path: Path) -> Path:
    """Write ``path`` until the disk is full (ENOSPC), and return it."""
    with pytest.raises(OSError, match="No space left on device"):
        path.write_bytes(bytes(2 * DISK_BYTES))
    return path
