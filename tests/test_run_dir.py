"""The run directory's learner packs and run.json."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from adaptive_runner.errors import ConfigError
from adaptive_runner.run_dir import PACK_SIZE, RunDir

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
