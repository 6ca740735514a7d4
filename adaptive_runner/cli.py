"""The `adaptive-runner` command: status, cancel, retry, logs, serve and demo.

Every command that takes RUN_DIR exits with code 2 (and says why in one line) when RUN_DIR is
not a run directory or its state.sqlite is missing or damaged. status, cancel, retry and logs
go through :class:`~adaptive_runner.manager.run.Run`, which unpickles no learner, so they work where
the learners' modules cannot be imported. Heavy modules are imported inside the commands, so
``--help`` stays fast. ``status --watch`` ends with 0 when the run has finished and with 130 on
Ctrl-C (like ``serve``), so ``adaptive-runner status RUN --watch && ...`` goes on only after the
run.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive_runner.common.run_dir import RunDir
from adaptive_runner.common.task_identity import RANK_SEPARATOR, task_of
from adaptive_runner.common.vocabulary import NOT_CLEAN, Outcome
from adaptive_runner.errors import ConfigError, ManagerDiedError
from adaptive_runner.manager.logs import configure_manager_logging
from adaptive_runner.state.schema import LearnerState, as_state

if TYPE_CHECKING:
    from collections.abc import Iterable

    from adaptive_runner.common.run_dir import RunDir
    from adaptive_runner.manager.run import Run
    from adaptive_runner.state.database import TaskRow
    from adaptive_runner.status.log_parser import TaskRecord

FOLLOW_INTERVAL_S = 1.0
WATCH_INTERVAL_S = 2.0  # status --watch without SECONDS
WATCH_ROWS = 20  # learners of each kind a --watch frame lists when stdout is no terminal
FAILED_ROWS = 20  # failed learners status lists without --state failed
# status --watch on a terminal: clear once, then each frame from the top left, each line and
# what is left below cleared behind it (no flicker, no scrolling).
_CLEAR, _HOME, _CLEAR_LINE, _CLEAR_BELOW = "\x1b[2J", "\x1b[H", "\x1b[K", "\x1b[J"
# Status-file flags, in the spirit of disBatch's E/R: R the task did not end cleanly (it
# failed, or was lost, expired or killed: NOT_CLEAN, non-zero or unknown exit), K killed by
# kill_on_error, C cancelled by the user, E its own output (in its log) holds error lines.
# The worker's documented exit codes.
_EXIT_CODES: dict[str, str] = {
    Outcome.DONE: "0",
    Outcome.RELEASED: "0",
    Outcome.HANDED_BACK: "0",
    Outcome.FAILED: "1",
}


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
    status.add_argument(
        "--state",
        type=_state,
        metavar="STATE",
        help="list only the learners in STATE: waiting, running, done, failed or cancelled",
    )
    status.add_argument(
        "--watch",
        type=_seconds,
        nargs="?",
        const=WATCH_INTERVAL_S,
        metavar="SECONDS",
        help="a live view, drawn again every SECONDS (default %(const)g): counts, queue, the "
        "running and failed learners; ends by itself (exit 0) when the run has finished, "
        "Ctrl-C ends it with 130",
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
        "--learner",
        type=int,
        nargs="+",
        action="extend",
        metavar="N",
        help="only the lines the tasks wrote while they ran these learners",
    )
    logs.add_argument(
        "--failed",
        action="store_true",
        help="only the lines of learners whose task did not end cleanly with them (failed, "
        "lost, expired or killed)",
    )
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new lines until the run ends"
    )
    return parser


def _state(text: str) -> LearnerState:
    """--state: a learner state, else argparse's error with the valid ones."""
    try:
        return as_state(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _seconds(text: str) -> float:
    """--watch: a positive number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0: write e.g. RUN_DIR --watch 5"
        )
    return seconds


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
            # Jobs that wait for good are a problem in `status`, not an end: serve goes on.
            while (
                not (all_done := rm.wait(1.0, stuck_after=None))
                and rm.job_manager
                and rm.job_manager.running
            ):
                counts = rm.status()
                bar.update(counts["done"] + counts["failed"] + counts["cancelled"] - bar.n)
    except KeyboardInterrupt:
        rm.stop()
        print("managers stopped; `adaptive-runner serve` again to continue", file=sys.stderr)
        return 130
    except ManagerDiedError as e:
        print(f"adaptive-runner: {e}", file=sys.stderr)
        return 1
    counts = rm.status()
    print(_counts(counts))
    if all_done:
        return 0
    print(
        f"adaptive-runner: not every learner is done ({counts['failed']} failed, "
        f"{counts['cancelled']} cancelled): `adaptive-runner status {args.run_dir} --state "
        "failed` says why",
        file=sys.stderr,
    )
    return 1


# -- status --------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    run = _open(args.run_dir)
    for option, given in (("--state", args.state is not None), ("--watch", args.watch is not None)):
        if given and args.format != "table":
            raise ConfigError(
                f"status {option} goes with the table: leave out --format {args.format}"
            )
    if args.watch is not None:
        if args.state is not None:
            raise ConfigError(
                "status --watch lists the running and failed learners: leave out --state "
                "(`status --state STATE` lists the others)"
            )
        return _watch(run, args.watch)
    if args.format == "info":
        print(run.info())
    elif args.format == "tsv":
        records = {r.task: r for r in run.parse_logs()}
        sys.stdout.writelines(_status_file(run.tasks(), records, now=time.time()))
    else:
        _status_table(run, args.state)
    return 0


def _status_table(run: Run, state: LearnerState | None) -> None:
    """The learners (in ``state``) like squeue, the counts, problems, then the failed ones."""
    from adaptive_runner.status.report import failed_table, learner_table  # noqa: PLC0415 - load only what runs
    from adaptive_runner.status.snapshot import last_line  # noqa: PLC0415 - load only what runs

    learners = run.learners(state)
    stages = len(run.config().stages or ())
    print(
        learner_table(learners, now=time.time(), stages=stages)
        if learners or not state
        else f"no learner is {state}"
    )
    counts = run.status()
    print(f"{sum(counts.values())} learners: {_counts(counts)}")
    for problem in run.problems():
        print(f"problem: {problem}")
    failed = [row for row in learners if row.state == LearnerState.FAILED]
    for reason, n in Counter(last_line(row.error) for row in failed).most_common():
        print(f"failed ({n}): {reason}")
    if failed:
        shown = failed if state else failed[:FAILED_ROWS]
        print(f"failed learners ({len(failed)}):")
        print(failed_table(shown, run.last_tasks([row.index for row in shown])))
        if len(shown) < len(failed):
            print(
                f"… and {len(failed) - len(shown)} more: `adaptive-runner status RUN_DIR "
                "--state failed` lists them all"
            )


def _watch(run: Run, interval_s: float) -> int:
    """``status --watch``: a frame every ``interval_s`` until the run has finished or Ctrl-C.

    On a terminal each frame is drawn over the last one, cut to the window; otherwise (a
    file, a pipe) each is printed below the last, after a blank line.
    """
    from adaptive_runner.status.queue import Looks  # noqa: PLC0415 - load only what runs
    from adaptive_runner.status.report import watch_text  # noqa: PLC0415 - load only what runs
    from adaptive_runner.status.snapshot import View  # noqa: PLC0415 - load only what runs

    looks = Looks(run.bound_schedulers())  # asks each group's queue at most every 5 s
    tty = sys.stdout.isatty()
    if tty:
        sys.stdout.write(_CLEAR)
    try:
        while True:
            width, height = shutil.get_terminal_size()
            rows = max(3, (height - 12) // 2) if tty else WATCH_ROWS  # two tables and a head
            snapshot = run.snapshot(View(state=LearnerState.RUNNING, page_size=rows), looks=looks)
            failed = run.learners(LearnerState.FAILED, limit=rows)
            frame = watch_text(snapshot, failed, run.last_tasks([row.index for row in failed]))
            if snapshot.finished:
                frame += "\n\nthe run has finished"
            else:
                frame += f"\n\nagain every {interval_s:g} s; Ctrl-C ends"
            if tty:
                lines = [line[: width - 1] for line in frame.splitlines()[: height - 1]]
                sys.stdout.write(_HOME + "".join(f"{line}{_CLEAR_LINE}\n" for line in lines))
                sys.stdout.write(_CLEAR_BELOW)
            else:
                sys.stdout.write(f"{frame}\n\n")
            sys.stdout.flush()
            if snapshot.finished:
                return 0
            time.sleep(interval_s)
    except KeyboardInterrupt:
        print()
        return 130


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
    from adaptive_runner.manager.run import RetryWarning  # noqa: PLC0415 - load only what runs
    from adaptive_runner.status.snapshot import format_selection  # noqa: PLC0415 - the same

    run = _open(args.run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RetryWarning)  # said below, in the command's words
        put_back = run.retry(args.learner, cancelled=args.cancelled)
    which = format_selection(put_back) if put_back else "none"
    print(f"back to waiting: {which}; {_counts(run.status())}")
    for state in LearnerState:
        left = put_back.left_alone_text(state, "add --cancelled")
        if left is not None:
            print(f"left alone: {left}")
    if put_back:
        print(
            "they run when a manager serves the run: `adaptive-runner serve RUN_DIR` or "
            "RunManager.resume(run_dir) (a manager serving it already picks them up)"
        )
    return 0


# -- logs ----------------------------------------------------------------------------------


def _logs(args: argparse.Namespace) -> int:
    from adaptive_runner.status.log_filter import LogFilter  # noqa: PLC0415 - load only what runs
    from adaptive_runner.status.log_lines import read_events  # noqa: PLC0415 - load only what runs

    run = _open(args.run_dir)
    run_dir = run.run_dir
    if args.task is not None and not args.follow and not run_dir.task_log(args.task).is_file():
        print(
            f"adaptive-runner: no log for task {args.task} in {run_dir.logs_dir}", file=sys.stderr
        )
        return 1
    reader = LogFilter(_learners(run, args.learner), failed=args.failed, follow=args.follow)
    reader.select(run.tasks() if reader.choosing else ())
    if reader.choosing and not args.follow and not _in_task(reader.tasks, args.task):
        print(f"adaptive-runner: {_nothing_chosen(args)}", file=sys.stderr)
        return 1
    paths = _log_paths(run_dir, args.task)
    _print_events(read_events(reader, _progress(iterable=paths, desc="reading logs", unit="log")))
    if not args.follow:
        return 0
    try:
        while True:
            finished = run.finished()
            reader.select(run.tasks() if reader.choosing else ())  # how the holds ended so far
            _print_events(read_events(reader, _log_paths(run_dir, args.task)))
            if finished:
                return 0
            time.sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        return 0


def _learners(run: Run, learners: list[int] | None) -> list[int] | None:
    """``logs --learner``: the indices, checked against the run's learners."""
    from adaptive_runner.state.schema import as_index  # noqa: PLC0415 - load only what runs

    if learners is None:
        return None
    n = run.config().n_learners
    return [as_index(index, n, "logs --learner") for index in learners]


def _in_task(tasks: set[str], task: str | None) -> set[str]:
    """Those of ``tasks`` that ``--task`` names (all without it), packed workers included."""
    return tasks if task is None else {t for t in tasks if task_of(t) == task or t == task}


def _nothing_chosen(args: argparse.Namespace) -> str:
    """Why ``logs --learner``/``--failed`` has no line to print."""
    from adaptive_runner.status.snapshot import learners_text  # noqa: PLC0415 - load only what runs

    who = "any learner" if args.learner is None else learners_text(args.learner)
    where = "any task" if args.task is None else f"task {args.task}"
    ended = "failed, lost, expired or killed " if args.failed else ""
    return f"nothing to show: no {ended}job of {who} in {where}"


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
