"""The run directory: learner packs, run.json, staged creation and the manager lock."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from adaptive_runner.common.run_dir import PACK_SIZE, RunDir, RunLock
from adaptive_runner.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


def test_learner_packs_round_trip_across_pack_boundaries(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    blobs = [bytes([i % 251]) * (i % 7) for i in range(PACK_SIZE + 5)]
    run_dir.write_learners(blobs)
    assert sorted(p.name for p in run_dir.learners_dir.iterdir()) == [
        "pack-00000.bin",
        "pack-00001.bin",
    ]
    for i in (0, 1, 6, PACK_SIZE - 1, PACK_SIZE, PACK_SIZE + 4):
        assert run_dir.read_learner(i) == blobs[i]
    with pytest.raises(ConfigError, match="not in"):
        run_dir.read_learner(PACK_SIZE + 5)


def test_learners_appended_keep_the_earlier_ones_of_their_pack(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    blobs = [bytes([i % 251]) * (i % 7 + 1) for i in range(PACK_SIZE + 5)]
    run_dir.write_learners(blobs[: PACK_SIZE - 2])
    run_dir.write_learners(blobs[PACK_SIZE - 2 : PACK_SIZE + 1], first=PACK_SIZE - 2)
    run_dir.write_learners(blobs[PACK_SIZE + 1 :], first=PACK_SIZE + 1)
    assert [run_dir.read_learner(i) for i in range(len(blobs))] == blobs
    with pytest.raises(ConfigError, match=r"pack-00001.bin holds learners 1024..1028 only"):
        run_dir.write_learners([b"gap"], first=PACK_SIZE + 7)  # no learner 1029 to follow
    assert run_dir.read_learner(PACK_SIZE + 4) == blobs[-1]


def test_not_a_pack(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.learners_dir.mkdir()
    (run_dir.learners_dir / "pack-00000.bin").write_bytes(b"garbage!" * 4)
    with pytest.raises(ConfigError, match="not a learner pack"):
        run_dir.read_learner(0)


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        RunDir(tmp_path).read_config()
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(ConfigError, match="malformed"):
        RunDir(tmp_path).read_config()


def test_run_json_without_the_newer_fields_still_reads(tmp_path: Path) -> None:
    config = {
        "name": "old",
        "created": "2024-01-01T00:00:00+00:00",
        "url": "",
        "config_hash": "x",
        "groups": [{"scheduler": "local", "options": {}}],
        "n_learners": 1,
        "save_interval_s": 1.0,
        "log_interval_s": 1.0,
        "lease_timeout_s": 1.0,
        "max_fails": 1,
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    read = RunDir(tmp_path).read_config()
    assert (read.host, read.interface, read.goal) == (None, None, None)


def test_create_is_all_or_nothing(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")

    def fail(staging: RunDir) -> None:
        (staging.path / "run.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_dir.create(fail, replace=False)
    assert list(tmp_path.iterdir()) == []
    run_dir.create(lambda staging: (staging.path / "marker").write_text("1"), replace=False)
    assert run_dir.path.stat().st_mode & 0o777 == 0o700
    with pytest.raises(OSError, match="disk full"):
        run_dir.create(fail, replace=True)
    assert (run_dir.path / "marker").read_text() == "1"  # the old one is kept
    run_dir.create(lambda _: None, replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert not (run_dir.path / "marker").exists()


def test_lock_is_held_by_one_holder(tmp_path: Path) -> None:
    first, second = RunLock(RunDir(tmp_path)), RunLock(RunDir(tmp_path))
    first.acquire()
    first.acquire()  # no-op when held
    with pytest.raises(ConfigError, match="is managed already"):
        second.acquire()
    assert not second.held
    first.release()
    second.acquire()
    with pytest.raises(ConfigError, match="is managed already"):
        RunLock(RunDir(tmp_path)).acquire()
    second.release()


def test_run_dir_imports_nothing_heavy() -> None:
    code = (
        "import sys, adaptive_runner.common.run_dir\n"
        "print(sorted({'sqlite3', 'jinja2', 'ipywidgets', 'pandas', 'zmq'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
