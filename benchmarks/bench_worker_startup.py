"""Worker start-up: process start to first evaluated point, against `python -c "import adaptive"`.

When a thousand array tasks start at once their start-up dominates, so the worker must cost
little more than importing adaptive itself (target: at most 1.2x). Both are measured side by
side, interleaved, each worker against a real DatabaseManager and a one-learner run directory
of its own (a worker goes on to the next waiting learner, so in a shared run the first would
take them all); then the worker's `-X importtime` output shows what it imports beyond
adaptive, heaviest first.

    python benchmarks/bench_worker_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import adaptive
import cloudpickle

from adaptive_runner.common.auth import create_keys
from adaptive_runner.common.run_dir import GroupConfig, RunConfig, RunDir
from adaptive_runner.manager.database_manager import DatabaseManager
from adaptive_runner.state.database import Database

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[1]
# Must never be imported by the worker (heavy, or only for the managers).
FORBIDDEN = (
    "ipywidgets",
    "pandas",
    "jinja2",
    "sqlite3",
    "adaptive_runner.state.database",
    "adaptive_runner.manager.database_manager",
    "adaptive_runner.manager.run_manager",
    "adaptive_runner.manager.job_manager",
)

ARRAY_ID = "L1"

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def stamp_first_point(x: float, *, stamp: str) -> float:
    """Record the wall-clock time of the first evaluation (the worker runs this)."""
    import os  # noqa: PLC0415 - pickled by value: runs in the worker
    import time  # noqa: PLC0415

    if not os.path.exists(stamp):  # noqa: PTH110
        with open(stamp, "w") as f:  # noqa: PTH123
            f.write(repr(time.time()))
    return x


def make_run(
    path: Path,
    learner: object,
    goal: object,
    group: dict[str, object] | None = None,
    *,
    save_interval_s: float = 300.0,
    log_interval_s: float = 60.0,
) -> RunDir:
    """A run directory of one learner, as a RunManager would write it (no job manager)."""
    run_dir = RunDir(path)
    for directory in (run_dir.learners_dir, run_dir.logs_dir, run_dir.jobs_dir):
        directory.mkdir(parents=True)
    create_keys(run_dir.keys_dir)
    with Database.create(
        run_dir.database, [str(path / "data.pickle")], dependencies={}, max_fails=3
    ) as db:  # the workers run as tasks of the Local array L1 (their environment says so)
        db.record_array(ARRAY_ID, n_tasks=10_000, script="", now=time.time())
    run_dir.write_learners([cloudpickle.dumps(learner)])
    run_dir.goal_file.write_bytes(cloudpickle.dumps(goal))
    run_dir.write_config(
        RunConfig(
            name="bench",
            created=datetime.now(UTC).isoformat(),
            url="",
            config_hash="bench",
            groups=[GroupConfig("local", group or {"executor": "sequential", "cores": 1})],
            n_learners=1,
            save_interval_s=save_interval_s,
            log_interval_s=log_interval_s,
            lease_timeout_s=600.0,
            max_fails=3,
        )
    )
    return run_dir


def make_startup_run(path: Path) -> RunDir:
    """A run whose one learner reaches its goal (1 point) at the first point."""
    stamp = functools.partial(stamp_first_point, stamp=str(path / "first_point"))
    return make_run(path, adaptive.Learner1D(stamp, bounds=(0, 1)), 1)


@contextlib.contextmanager
def started(run_dir: RunDir) -> Iterator[RunDir]:
    """``run_dir`` with its DatabaseManager running, stopped on the way out."""
    manager = DatabaseManager(run_dir)
    url = manager.start()
    run_dir.write_config(dataclasses.replace(run_dir.read_config(), url=url))
    try:
        yield run_dir
    finally:
        manager.stop()


def worker_env(index: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LOCAL_ARRAY_ID": ARRAY_ID,
        "LOCAL_ARRAY_TASK_ID": str(index),
    }


def time_import_adaptive() -> float:
    start = time.time()
    subprocess.run([sys.executable, "-c", "import adaptive"], check=True)
    return time.time() - start


def time_worker(run_dir: RunDir, index: int) -> tuple[float, float]:
    """Seconds from process start to the first point, and to the worker's exit."""
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "adaptive_runner.worker", str(run_dir.path)],
        env=worker_env(index),
        capture_output=True,
        text=True,
        check=False,
    )
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"worker {index} exited with {proc.returncode}:\n{proc.stderr}")
    first = float((run_dir.path / "first_point").read_text())
    return first - start, end - start


def importtime(args: list[str], env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Module -> (self us, cumulative us) from ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, tuple[int, int]] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        result[name.strip()] = (int(self_us), int(cumulative_us))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        # One warm-up of each fills the page cache, as on a cluster after the first task.
        time_import_adaptive()
        with started(make_startup_run(Path(tmp) / "warm-up")) as run_dir:
            time_worker(run_dir, 0)
        baseline, first_point, total = [], [], []
        for rep in range(1, args.repeat + 1):
            baseline.append(time_import_adaptive())
            with started(make_startup_run(Path(tmp) / f"run-{rep}")) as run_dir:
                to_first, to_exit = time_worker(run_dir, rep)
            first_point.append(to_first)
            total.append(to_exit)
        with started(make_startup_run(Path(tmp) / "importtime")) as run_dir:
            modules = importtime(["-m", "adaptive_runner.worker", str(run_dir.path)], worker_env(0))
    adaptive_modules = importtime(["-c", "import adaptive"], dict(os.environ))

    b, w, t = (statistics.median(x) for x in (baseline, first_point, total))
    print(f"repetitions: {args.repeat} (median; all values in seconds)")
    print(f"python -c 'import adaptive'        {b:.3f}   {_spread(baseline)}")
    print(f"worker: start -> first point       {w:.3f}   {_spread(first_point)}")
    print(f"worker: start -> exit (done)       {t:.3f}   {_spread(total)}")
    print(f"ratio first point / import adaptive: {w / b:.2f}  (target <= 1.20)")
    print(f"  the same from the fastest of each:   {min(first_point) / min(baseline):.2f}")
    print(f"ratio exit / import adaptive:        {t / b:.2f}")

    extra = {m: v for m, v in modules.items() if m not in adaptive_modules}
    print(f"\nworker imports {len(modules)} modules, {len(extra)} beyond `import adaptive`")
    by_package: dict[str, int] = {}
    for name, (self_us, _) in extra.items():
        package = name.split(".")[0]
        by_package[package] = by_package.get(package, 0) + self_us
    print("import time beyond `import adaptive`, by top-level package (ms):")
    for package, self_us in sorted(by_package.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {self_us / 1000:8.1f}  {package}")
    print(f"  {sum(by_package.values()) / 1000:8.1f}  (all)")
    print(f"\ntop {args.top} of those modules by self time (us):")
    for name, (self_us, cumulative_us) in sorted(extra.items(), key=lambda kv: -kv[1][0])[
        : args.top
    ]:
        print(f"  {self_us:>8} self {cumulative_us:>8} cumulative  {name}")
    bad = sorted({m if m in FORBIDDEN else m.split(".")[0] for m in extra} & set(FORBIDDEN))
    print(f"\nforbidden modules the worker adds to adaptive's: {bad or 'none'}")


def _spread(values: list[float]) -> str:
    return f"(min {min(values):.3f}, max {max(values):.3f})"


if __name__ == "__main__":
    main()
