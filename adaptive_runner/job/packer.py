"""Start K workers on this node of a packed allocation and stay until all have ended (job side).

``python -m adaptive_runner.packing K COMMAND...`` runs once per node of an allocation (the
job script itself on one node; ``srun``/``pbsdsh -u`` on several) and starts K copies of
``python COMMAND...``, each told its rank in the allocation (node index x K + k) in
``ADAPTIVE_RUNNER_RANK``: each worker then claims learners under its own id (see
``task_identity.py``). The stop signals it receives are passed on to every worker still
running, so a cancel or the time-limit warning reaches them all (each saves and releases);
a worker that dies (kill -9) ends alone while the others go on. It exits when the last one
has, with 0 if all ended with 0, else the first failing worker's code. When all ended with 0
and no stop signal came, no learner was left for them: it says so (``node_idle_line``), and
the job manager may hand the node back to the scheduler before the allocation ends.

Stdlib only: it starts before any worker, once per node.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from functools import partial
from typing import TYPE_CHECKING

from adaptive_runner.common.task_identity import RANK_VAR, node_name
from adaptive_runner.common.vocabulary import STOP_SIGNALS, node_idle_line, worker_ended_line

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Where a node's index in its allocation is: SLURM's srun, PBS's pbsdsh; 0 without either.
NODE_INDEX_VARS = ("SLURM_NODEID", "PBS_NODENUM")


def node_index(environ: Mapping[str, str]) -> int:
    """The index of the node we run on in the allocation (0: the first, or no launcher)."""
    for var in NODE_INDEX_VARS:
        value = environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def run_workers(per_node: int, command: Sequence[str], environ: Mapping[str, str]) -> int:
    """Start ``per_node`` workers ``python command``, forward stop signals, wait for all."""
    first = node_index(environ) * per_node
    workers: list[subprocess.Popen[bytes]] = []
    die_with_us = partial(_die_with_parent, os.getpid())
    received: list[int] = []  # a worker started after a signal gets it too

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for worker in workers:
            worker.send_signal(signum)  # not to one that has ended (send_signal polls first)

    for sig in (*STOP_SIGNALS, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for rank in range(first, first + per_node):
        env = {**environ, RANK_VAR: str(rank)}
        workers.append(
            subprocess.Popen([sys.executable, *command], env=env, preexec_fn=die_with_us)  # noqa: PLW1509 - single-threaded here
        )
        for signum in received:
            workers[-1].send_signal(signum)
    codes = [worker.wait() for worker in workers]
    for rank, code in enumerate(codes, start=first):
        if code != 0:
            print(worker_ended_line(rank, code), flush=True)
    if not received and not any(codes):
        print(node_idle_line(node_name(environ)), flush=True)
    return next((_exit_code(code) for code in codes if code != 0), 0)


def _die_with_parent(parent: int) -> None:
    """In a worker before it starts: be killed (SIGKILL) when the packer dies.

    A packer killed outright would leave its workers running outside the allocation (a
    scheduler that tracks processes by parent loses them), computing and saving learners
    the job manager has given to another allocation. Linux only (prctl); elsewhere, nothing.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the packer died before the prctl took effect
        os._exit(1)


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # as a shell reports a death by signal


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``K COMMAND...`` and run the workers; the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) < 2 or not args[0].isdigit() or int(args[0]) < 1:  # noqa: PLR2004
        sys.stderr.write("usage: python -m adaptive_runner.packing WORKERS COMMAND...\n")
        return 2
    return run_workers(int(args[0]), args[1:], os.environ)
