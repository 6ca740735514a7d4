"""The `adaptive-runner` command: status, cancel, retry, logs, serve and demo.

Every command that takes RUN_DIR exits with code 2 (and says why in one line) when RUN_DIR is
not a run directory or its state.sqlite is missing or damaged. status, cancel, retry and logs
go through :class:`~adaptive_runner.manager.run.Run`, which unpickles no learner, so they work where
the learners' modules cannot be imported. Heavy modules are imported inside the commands, so
``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.common.task_identity import RANK_SEPARATOR
from adaptive_runner.common.vocabulary import NOT_CLEAN, Outcome
from adaptive_runner.errors import ConfigError, ManagerDiedError
from adaptive_runner.manager.logs import configure_manager_logging

if TYPE_CHECKING:
    from collections.abc import Iterable

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.manager.run import Run
    from adaptive_runner.state.database import LearnerRow, TaskRow
    from adaptive_runner.status.log_parser import TaskRecord

FOLLOW_INTERVAL_S = 1.0
# Status-file flags, in the spirit of disBatch's E/R: R the task did not end cleanly (it
# failed, or was lost, expired or killed: NOT_CLEAN, non-zero or unknown exit), K killed by
# kill_on_error, C cancelled by the user, E its own output (in its log) holds error lines.
# The worker's documented exit codes.
_EXIT_CODES: dict[str, str] = {Outcome.DONE: "0", Outcome.RELEASED: "0", Outcome.FAILED: "1"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptive-runner", description="Run adaptive learners as resumable job arrays."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run 8 learners on the embedded Local scheduler")
    demo.add_argument("--dir", type=Path, default=Path("adaptive-runner-demo"), help="where")
    serve = sub.add_parser(
        "serve", help="run the managers of RUN_DIR until the run ends (e.g. in tmux)"
    )
    serve.add_argument("run_dir", type=Path)
    status = sub.add_parser("status", help="one line per learner, like squeue")
    status.add_argument("run_dir", type=Path)
    status.add_argument(
        "--format",
        choices=("table", "tsv", "info"),
        default="table",
        help="tsv: a status file, one line per task (flags, learner, task, host, pid, exit "
        "code, elapsed, start, finish, attempts), like disBatch's; info: state, counts and "
        "totals (elapsed, CPU-hours, memory, data on disk, queue wait)",
    )
    cancel = sub.add_parser("cancel", help="cancel the run, or some learners, and their jobs")
    cancel.add_argument("run_dir", type=Path)
    cancel.add_argument(
        "--learner",
        type=int,
        nargs="+",
        action="extend",
        metavar="N",
        help="cancel only these learners (default: the whole run)",
    )
    retry = sub.add_parser(
        "retry", help="put failed learners back to waiting (a manager must serve the run)"
    )
    retry.add_argument("run_dir", type=Path)
    retry.add_argument(
        "--learner",
        type=int,
        nargs="+",
        action="extend",
        metavar="N",
        help="retry only these learners (default: every failed one)",
    )
    retry.add_argument("--cancelled", action="store_true", help="cancelled learners come back too")
    logs = sub.add_parser("logs", help="the job logs of all tasks, merged in time order")
    logs.add_argument("run_dir", type=Path)
    logs.add_argument(
        "--task",
        metavar="ID",
        help="only this array task (e.g. 123_4, L1_0), with its packed workers (123_4@2)",
    )
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new lines until the run ends"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    configure_manager_logging()  # what the commands log goes to stderr; stdout is the answer
    commands = {
        "demo": _demo,
        "serve": _serve,
        "status": _status,
        "cancel": _cancel,
        "retry": _retry,
        "logs": _logs,
    }
    try:
        return commands[args.command](args)
    except ConfigError as e:  # a bad argument, or a damaged run (RunStateError): one line
        print(f"adaptive-runner: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `adaptive-runner logs RUN | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0


def _open(path: Path) -> Run:
    """The run in ``path``; ConfigError (exit 2) if it is no run directory."""
    from adaptive_runner.manager.run import Run  # noqa: PLC0415 - sqlite and the schedulers on demand

    run = Run(path)
    run.config()
    return run


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def _progress(**kwargs: Any) -> Any:
    """A tqdm progress bar on stderr, shown only on a terminal."""
    from tqdm import tqdm  # noqa: PLC0415 - only the long commands need it

    return tqdm(file=sys.stderr, disable=None, dynamic_ncols=True, **kwargs)


# -- demo and serve ------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from adaptive_runner.demo import run_demo  # noqa: PLC0415 - load only what runs

    return run_demo(args.dir)


def _serve(args: argparse.Namespace) -> int:
    from adaptive_runner.manager.run_manager import RunManager  # noqa: PLC0415 - load only what runs

    _open(args.run_dir)
    rm = RunManager.resume(args.run_dir)
    print(f"serving {rm.run_dir.path}; Ctrl-C stops the managers, jobs keep running")
    try:
        with _progress(total=len(rm.fnames), desc="learners finished", unit="learner") as bar:
            # wait() stops the managers when the run ends, and raises if one of them died.
            while not (all_done := rm.wait(1.0)) and rm.job_manager and rm.job_manager.running:
                counts = rm.status()
                bar.update(counts["done"] + counts["failed"] + counts["cancelled"] - bar.n)
    except KeyboardInterrupt:
        rm.stop()
        print("managers stopped; `adaptive-runner serve` again to continue", file=sys.stderr)
        return 130
    except ManagerDiedError as e:
        print(f"adaptive-runner: {e}", file=sys.stderr)
        return 1
    print(_counts(rm.status()))
    return 0 if all_done else 1


# -- status --------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    run = _open(args.run_dir)
    if args.format == "info":
        print(run.info())
        return 0
    if args.format == "tsv":
        records = {r.task: r for r in run.parse_logs()}
        sys.stdout.writelines(_status_file(run.tasks(), records, now=time.time()))
        return 0
    learners = run.learners()
    print(_table(learners, now=time.time()))
    counts = run.status()
    print(f"{sum(counts.values())} learners: {_counts(counts)}")
    for problem in run.problems():
        print(f"problem: {problem}")
    reasons = Counter(_last_line(row.error) for row in learners if row.state == "failed")
    for reason, n in reasons.most_common():
        print(f"failed ({n}): {reason}")
    return 0


def _last_line(error: str | None) -> str:
    """The line of a reason or traceback that says what went wrong (its last)."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no reason recorded)"


def _table(learners: list[LearnerRow], *, now: float) -> str:
    header = ("LEARNER", "STATE", "TASK", "HOST", "NPOINTS", "LOSS", "ATTEMPTS", "HEARTBEAT")
    rows = [header]
    for row in learners:
        running = row.state == "running" and row.last_heartbeat is not None
        rows.append(
            (
                str(row.index),
                str(row.state),
                row.task or "-",
                row.host or "-",
                "-" if row.npoints is None else str(row.npoints),
                "-" if row.loss is None else f"{row.loss:.4g}",
                str(row.attempts),
                _age(now - row.last_heartbeat) if running and row.last_heartbeat else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = {0, 4, 5, 6}  # right-aligned, like squeue's numbers
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(r)
        ).rstrip()
        for r in rows
    )


def _age(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: how long ago the last heartbeat came."""
    s = max(0, int(seconds))
    if s < 60:  # noqa: PLR2004 - a minute
        return f"{s}s"
    if s < 3600:  # noqa: PLR2004 - an hour
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _status_file(
    tasks: list[TaskRow], records: dict[str, TaskRecord], *, now: float
) -> Iterable[str]:
    """Tab-separated lines, one per task that held a learner (epoch seconds, like disBatch)."""
    yield "#flags\tlearner\ttask\thost\tpid\texit_code\telapsed_s\tstart\tfinish\tattempts\n"
    for t in tasks:
        outcome = t.outcome or ""
        record = records.get(t.task)
        flags = "".join(
            flag
            for flag, on in (
                ("R", outcome in NOT_CLEAN),
                ("K", outcome == Outcome.KILLED),
                ("C", outcome == Outcome.CANCELLED),
                ("E", record is not None and bool(record.output_errors)),
            )
            if on
        )
        end = now if t.finished is None else t.finished
        fields = (
            flags,
            str(t.learner),
            t.task,
            t.host or "",
            "" if t.pid is None else str(t.pid),
            _EXIT_CODES.get(outcome, ""),
            f"{end - t.started:.3f}",
            f"{t.started:.3f}",
            "" if t.finished is None else f"{t.finished:.3f}",
            str(t.attempt),
        )
        yield "\t".join(fields) + "\n"


# -- cancel --------------------------------------------------------------------------------


def _cancel(args: argparse.Namespace) -> int:
    run = _open(args.run_dir)
    run.cancel(args.learner)
    what = "the run" if args.learner is None else "learners " + " ".join(map(str, args.learner))
    print(f"cancelled {what}; {_counts(run.status())}")
    return 0


# -- retry ---------------------------------------------------------------------------------


def _retry(args: argparse.Namespace) -> int:
    run = _open(args.run_dir)
    put_back = run.retry(args.learner, cancelled=args.cancelled)
    which = " ".join(map(str, put_back)) if put_back else "none"
    print(f"back to waiting: {which}; {_counts(run.status())}")
    if put_back:
        print(
            "they run when a manager serves the run: `adaptive-runner serve RUN_DIR` or "
            "RunManager.resume(run_dir) (a manager serving it already picks them up)"
        )
    return 0


# -- logs ----------------------------------------------------------------------------------


def _logs(args: argparse.Namespace) -> int:
    from adaptive_runner.status.log_lines import read_events  # noqa: PLC0415 - load only what runs
    from adaptive_runner.status.log_parser import LineReader  # noqa: PLC0415 - load only what runs

    run = _open(args.run_dir)
    run_dir = run.run_dir
    if args.task is not None and not args.follow and not run_dir.task_log(args.task).is_file():
        print(
            f"adaptive-runner: no log for task {args.task} in {run_dir.logs_dir}", file=sys.stderr
        )
        return 1
    reader = LineReader()
    paths = _log_paths(run_dir, args.task)
    _print_events(read_events(reader, _progress(iterable=paths, desc="reading logs", unit="log")))
    if not args.follow:
        return 0
    try:
        while True:
            finished = run.finished()
            _print_events(read_events(reader, _log_paths(run_dir, args.task)))
            if finished:
                return 0
            time.sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        return 0


def _log_paths(run_dir: RunDir, task: str | None) -> list[Path]:
    if task is None:
        return sorted(run_dir.logs_dir.glob("*.log"))
    # A packed allocation's workers log to files of their own, next to the allocation's.
    workers = run_dir.logs_dir.glob(f"{glob.escape(task)}{RANK_SEPARATOR}*.log")
    return [run_dir.task_log(task), *sorted(workers)]


def _print_events(events: list[tuple[float, str]]) -> None:
    sys.stdout.writelines(text for _, text in events)
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
