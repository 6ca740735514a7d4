"""A fake PBS server for tests: qsub, qstat and qdel in the PBS Pro or Torque dialect.

No PBS server can be installed where the tests run, so these commands keep the server's state in
``$FAKE_PBS_STATE`` (one JSON file per job, under a lock) and run each array's tasks as local
detached processes, through one supervisor process per array. They print what the real commands
print (formats recorded in tests/data/pbs/README.md).

Environment (read by every command, like server settings):

- ``FAKE_PBS_STATE``: the state directory (required).
- ``FAKE_PBS_FLAVOR``: ``pbspro`` (default) or ``torque``.
- ``FAKE_PBS_SLOTS``: how many tasks of one array the "cluster" runs at once (default 64).
- ``FAKE_PBS_HISTORY``: PBS Pro ``job_history_enable``; ``0`` makes finished jobs vanish.
- ``FAKE_PBS_KEEP_COMPLETED``: Torque ``keep_completed`` in seconds (default 300); after it
  completed tasks leave ``qstat``.
- ``FAKE_PBS_ODD_VARIABLE``: a ``NAME=value`` added to every job's Variable_List; PBS Pro
  prints Variable_List values unescaped (openpbs #2541), so quotes here break the JSON.
- ``FAKE_PBS_MAX_ARRAY_SIZE``: the server's array size limit shown by ``qstat -B -f``.
- ``FAKE_PBS_QUEUES``: comma-separated queue names (default ``workq`` / ``batch``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from collections.abc import Iterator

SERVER = "pbs-fake"
KILL_DELAY_S = 10.0  # PBS's kill_delay: SIGTERM, then SIGKILL
UNKNOWN_EXIT = 153  # PBSE_UNKJOBID (15001) as an exit status
BADSTATE_EXIT = 170  # PBSE_BADSTATE (15018)


def flavor() -> str:
    value = os.environ.get("FAKE_PBS_FLAVOR", "pbspro")
    if value not in ("pbspro", "torque"):
        sys.exit(f"fake PBS: FAKE_PBS_FLAVOR must be pbspro or torque, got {value!r}")
    return value


def state_dir() -> Path:
    path = os.environ.get("FAKE_PBS_STATE")
    if not path:
        sys.exit("fake PBS: FAKE_PBS_STATE is not set")
    jobs = Path(path) / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    return Path(path)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    with (state_dir() / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def job_file(seq: int) -> Path:
    return state_dir() / "jobs" / f"{seq}.json"


def load(seq: int) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(job_file(seq).read_text())
    return job


def save(job: dict[str, Any]) -> None:
    tmp = job_file(job["seq"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    tmp.replace(job_file(job["seq"]))


def all_jobs() -> list[dict[str, Any]]:
    return [load(int(p.stem)) for p in sorted((state_dir() / "jobs").glob("*.json"))]


# -- ids ----------------------------------------------------------------------------------------


def array_id(job: dict[str, Any]) -> str:
    if job["indices"] is None:
        return f"{job['seq']}.{SERVER}"
    return f"{job['seq']}[].{SERVER}"


def task_id(job: dict[str, Any], index: str) -> str:
    if job["indices"] is None:
        return f"{job['seq']}.{SERVER}"
    return f"{job['seq']}[{index}].{SERVER}"


ID = re.compile(r"^(\d+)(?:\[(\d*)\])?(?:\.(.+))?$")


def resolve(job_id: str) -> tuple[dict[str, Any], list[str]] | None:
    """The job and task indices an id names, or None if the server does not know it."""
    match = ID.match(job_id)
    if not match or (match.group(3) not in (None, SERVER)):
        return None
    seq = int(match.group(1))
    if not job_file(seq).exists():
        return None
    job = load(seq)
    index = match.group(2)
    if job["indices"] is None:
        return (job, ["0"]) if index is None else None
    if index is None:
        return None
    if index == "":
        return job, list(job["tasks"])
    return (job, [index]) if index in job["tasks"] else None


def visible(job: dict[str, Any], index: str, *, history: bool) -> bool:
    """Whether qstat still knows this task (history and keep_completed as configured)."""
    task = job["tasks"][index]
    if task["state"] != "F":
        return True
    if job["flavor"] == "pbspro":
        return os.environ.get("FAKE_PBS_HISTORY", "1") == "1" and (history or not finished(job))
    keep = float(os.environ.get("FAKE_PBS_KEEP_COMPLETED", "300"))
    return time.time() - (task["etime"] or 0) < keep


def finished(job: dict[str, Any]) -> bool:
    return all(task["state"] == "F" for task in job["tasks"].values())


# -- qsub ---------------------------------------------------------------------------------------

PBSPRO_USAGE = """usage: qsub [-a date_time] [-A account_string] [-c interval]
\t[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]
\t[-k keep] [-l resource_list] [-m mail_options] [-M user_list]
\t[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]
\t[-S path] [-u user_list] [-W otherattributes=value...]
\t[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]
       qsub --version
"""
WITH_VALUE = set("aAceCNoejqlJtWvSmMpPkurd")
NO_VALUE = set("hVzfIX")


def parse_options(args: list[str], *, source: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Split qsub arguments into (option, value) pairs and the remaining operands."""
    options: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--":
            i += 1
            break
        letter = arg[1:2]
        if letter in NO_VALUE:
            options.append((letter, ""))
        elif letter in WITH_VALUE:
            value = arg[2:] if len(arg) > 2 else (args[i + 1] if i + 1 < len(args) else None)
            if value is None:
                fail(f"qsub: option requires an argument -- '{letter}'", 2)
            if len(arg) <= 2:
                i += 1
            options.append((letter, value))
        else:
            fail(f"qsub: invalid option -- '{letter}' ({source})", 2)
        i += 1
    return options, args[i:]


def fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.exit(code)


def script_directives(text: str) -> list[str]:
    """Arguments from the script's #PBS lines, read until the first command like qsub does."""
    args: list[str] = []
    for number, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if number == 0 and stripped.startswith("#!"):
            continue
        if not stripped or (stripped.startswith("#") and not stripped.startswith("#PBS")):
            continue
        if not stripped.startswith("#PBS"):
            break
        args.extend(shlex.split(stripped[len("#PBS") :]))
    return args


def parse_range(spec: str, kind: str) -> tuple[list[int], int | None]:
    """``0-3%2`` (Torque -t, OpenPBS -J) or ``0-9:2`` (PBS Pro step) -> indices, limit."""
    spec, _, limit = spec.partition("%")
    indices: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not match:
            fail(f"qsub: illegal {kind} value", 2)
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) else start
        indices.extend(range(start, stop + 1, int(match.group(3) or 1)))
    return indices, int(limit) if limit else None


def qsub(argv: list[str]) -> None:
    dialect = flavor()
    if argv == ["--version"]:
        print("pbs_version = 23.06.06" if dialect == "pbspro" else "Version: 6.1.3")
        return
    cli_options, operands = parse_options(argv, source="command line")
    if len(operands) != 1:
        fail("qsub: this fake reads the job script from a file operand\n" + PBSPRO_USAGE, 2)
    script = Path(operands[0])
    text = script.read_text()
    directive_options, _ = parse_options(script_directives(text), source=f"#PBS in {script}")
    settings: dict[str, str] = {}
    resources: list[str] = []
    for letter, value in [*directive_options, *cli_options]:  # the command line wins
        if letter == "l":
            resources.append(value)
        else:
            settings[letter] = value
    indices, limit = array_settings(settings, dialect)
    queue = settings.get("q", default_queues()[0])
    if queue not in default_queues():
        fail(f"qsub: Unknown queue {queue}", 170)
    with locked():
        counter = state_dir() / "seq"
        seq = int(counter.read_text()) if counter.exists() else 100
        counter.write_text(str(seq + 1))
        spool = state_dir() / "spool"
        spool.mkdir(exist_ok=True)
        spooled = spool / f"{seq}.SC"
        spooled.write_text(text)  # PBS copies the script at submission
        name = settings.get("N", script.name)
        keys = [str(i) for i in indices] if indices is not None else ["0"]
        job = {
            "seq": seq,
            "flavor": dialect,
            "name": name,
            "queue": queue,
            "owner": f"{os.environ.get('USER', 'root')}@{SERVER}",
            "script": str(spooled),
            "indices": indices,
            "limit": limit,
            "slots": int(os.environ.get("FAKE_PBS_SLOTS", "64")),
            "workdir": str(Path.cwd()),
            "join": settings.get("j", "n"),
            "out": settings.get("o"),
            "err": settings.get("e"),
            "resources": resources,
            "env": dict(os.environ),
            "submit_args": shlex.join(argv),
            "ctime": time.time(),
            "tasks": {
                key: {"state": "Q", "pid": None, "exit": None, "stime": None, "etime": None}
                for key in keys
            },
            "deleted": [],
        }
        save(job)
    subprocess.Popen(
        [sys.executable, __file__, "supervise", str(seq)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    print(array_id(job))


def array_settings(settings: dict[str, str], dialect: str) -> tuple[list[int] | None, int | None]:
    """The array's indices and concurrency limit, with each dialect's own errors."""
    if dialect == "pbspro" and "t" in settings:
        fail("qsub: invalid option -- 't'\n" + PBSPRO_USAGE, 2)
    if dialect == "torque" and "J" in settings:
        fail("qsub: invalid option -- 'J'", 2)
    indices: list[int] | None = None
    limit = None
    if "J" in settings:
        indices, limit = parse_range(settings["J"], "-J")
        if len(indices) < 2 or "," in settings["J"]:
            fail("qsub: illegal -J value", 2)
    if "t" in settings:
        indices, limit = parse_range(settings["t"], "-t")
    for attribute in filter(None, settings.get("W", "").split(",")):
        key, _, value = attribute.partition("=")
        if key == "max_run_subjobs" and dialect == "pbspro" and value.isdigit():
            limit = int(value)
        elif key == "max_run_subjobs":
            fail(f"qsub: illegal -W value {attribute}", 2)
    return indices, limit


def default_queues() -> list[str]:
    default = "workq" if flavor() == "pbspro" else "batch"
    return os.environ.get("FAKE_PBS_QUEUES", default).split(",")


# -- the supervisor: runs one array's tasks ----------------------------------------------------


def output_path(job: dict[str, Any], index: str, stream: str) -> Path:
    """Where PBS puts a task's stdout (``o``) or stderr (``e``)."""
    seq, name = job["seq"], job["name"]
    if job["indices"] is None:
        default = f"{name}.{stream}{seq}"
    elif job["flavor"] == "pbspro":
        default = f"{name}.{stream}{seq}.{index}"
    else:
        default = f"{name}.{stream}{seq}-{index}"
    given = job["out"] if stream == "o" else job["err"]
    if not given:
        return Path(job["workdir"]) / default
    given = given.split(":", 1)[1] if re.match(r"^[\w.-]+:/", given) else given
    given = given.replace("^array_index^", index)
    path = Path(given) if Path(given).is_absolute() else Path(job["workdir"]) / given
    return path / default if given.endswith("/") or path.is_dir() else path


def task_environment(job: dict[str, Any], index: str) -> dict[str, str]:
    env = dict(job["env"])
    env.update(
        {
            "PBS_JOBID": task_id(job, index),
            "PBS_JOBNAME": job["name"] if job["flavor"] == "pbspro" else f"{job['name']}-{index}",
            "PBS_O_WORKDIR": job["workdir"],
            "PBS_O_HOST": SERVER,
            "PBS_O_QUEUE": job["queue"],
            "PBS_QUEUE": job["queue"],
            "PBS_ENVIRONMENT": "PBS_BATCH",
            "PBS_O_HOME": job["env"].get("HOME", "/"),
            "PBS_O_PATH": job["env"].get("PATH", ""),
        }
    )
    if job["indices"] is not None:
        if job["flavor"] == "pbspro":
            env["PBS_ARRAY_INDEX"] = index
            env["PBS_ARRAY_ID"] = array_id(job)
        else:
            env["PBS_ARRAYID"] = index
    return env


def start_task(job: dict[str, Any], index: str) -> subprocess.Popen[bytes]:
    out = output_path(job, index, "o")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("ab") as stdout:
        if job["join"] == "oe":
            stderr: Any = subprocess.STDOUT
            return spawn(job, index, stdout, stderr)
        err = output_path(job, index, "e")
        err.parent.mkdir(parents=True, exist_ok=True)
        with err.open("ab") as stderr:
            return spawn(job, index, stdout, stderr)


def spawn(job: dict[str, Any], index: str, stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["/bin/bash", job["script"]],
        cwd=job["env"].get("HOME", "/"),  # PBS starts jobs in the home directory
        env=task_environment(job, index),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,  # its own process group, which qdel signals
    )


def supervise(seq: int) -> None:
    """Start queued tasks as slots free up, record exits, escalate qdel to SIGKILL."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    term_sent: dict[str, float] = {}
    while True:
        with locked():
            job = load(seq)
            reap(job, procs, term_sent)
            cap = min(job["limit"] or job["slots"], job["slots"])
            for index, task in job["tasks"].items():
                if len(procs) >= cap:
                    break
                if task["state"] == "Q" and index not in job["deleted"]:
                    proc = start_task(job, index)
                    procs[index] = proc
                    task.update(state="R", pid=proc.pid, stime=time.time())
            save(job)
            if finished(job):
                return
        time.sleep(0.05)


def reap(
    job: dict[str, Any], procs: dict[str, subprocess.Popen[bytes]], term_sent: dict[str, float]
) -> None:
    """Record finished tasks (killed by signal n: exit 256 + n, as PBS reports it)."""
    for index, proc in list(procs.items()):
        code = proc.poll()
        task = job["tasks"][index]
        if code is not None:
            task.update(state="F", exit=code if code >= 0 else 256 - code, etime=time.time())
            del procs[index]
        elif index in job["deleted"]:
            if index not in term_sent:
                term_sent[index] = time.time()
                task["state"] = "E"
            elif time.time() - term_sent[index] > KILL_DELAY_S:
                signal_group(proc.pid, signal.SIGKILL)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone: nothing left to signal
        os.killpg(pgid, sig)


# -- qdel ---------------------------------------------------------------------------------------


def qdel(argv: list[str]) -> None:
    dialect = flavor()
    code = 0
    with locked():
        for job_id in argv:
            found = resolve(job_id)
            if found is None or not any(visible(found[0], i, history=True) for i in found[1]):
                suffix = "Error " if dialect == "torque" else ""
                sys.stderr.write(f"qdel: Unknown Job Id {suffix}{job_id}\n")
                code = UNKNOWN_EXIT
                continue
            job, indices = found
            if all(job["tasks"][i]["state"] == "F" for i in indices):
                message = (
                    "Job has finished"
                    if dialect == "pbspro"
                    else ("Request invalid for state of job")
                )
                sys.stderr.write(f"qdel: {message} {job_id}\n")
                code = BADSTATE_EXIT
                continue
            for index in indices:
                task = job["tasks"][index]
                if task["state"] == "Q":
                    task.update(state="F", etime=time.time())
                elif task["state"] in ("R", "E") and task["pid"]:
                    signal_group(task["pid"], signal.SIGTERM)
                if index not in job["deleted"]:
                    job["deleted"].append(index)
            save(job)
    sys.exit(code)


# -- qstat --------------------------------------------------------------------------------------


def qstat(argv: list[str]) -> None:
    dialect = flavor()
    if argv == ["--version"]:
        if dialect == "pbspro":
            print("pbs_version = 23.06.06")
        else:
            sys.stderr.write("Version: 6.1.3\nCommit: 0000000\n")
        return
    flags = {a for a in argv if a.startswith("-")}
    ids = [a for a in argv if not a.startswith("-") and a != "json"]
    if "-B" in flags:
        print(f"Server: {SERVER}")
        print("    server_state = Active")
        limit = os.environ.get("FAKE_PBS_MAX_ARRAY_SIZE")
        if limit:
            name = "max_array_size" if dialect == "pbspro" else "max_job_array_size"
            print(f"    {name} = {limit}")
        return
    if "-Q" in flags:
        unknown = [q for q in ids if q not in default_queues()]
        if unknown:
            fail(f"qstat: Unknown queue destination {unknown[0]}", 170)
        print("Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type")
        return
    with locked():
        if dialect == "pbspro":
            if not {"-f", "-F"} <= flags:
                fail("fake qstat (pbspro) prints only the -f -F json format", 2)
            text, code = pbspro_json(ids, subjobs="-t" in flags, history="-x" in flags)
        else:
            if "-x" not in flags:
                fail("fake qstat (torque) prints only the -x XML format", 2)
            text, code = torque_xml(ids, expand="-t" in flags)
    sys.stdout.write(text)
    sys.exit(code)


def selected(
    ids: list[str], *, history: bool
) -> tuple[list[tuple[dict[str, Any], list[str]]], int]:
    """(job, indices) per asked id (or every job), and the exit status for unknown ids."""
    dialect = flavor()
    code = 0
    chosen: list[tuple[dict[str, Any], list[str]]] = []
    if not ids:
        for job in all_jobs():
            keep = [i for i in job["tasks"] if visible(job, i, history=history)]
            if keep:
                chosen.append((job, keep))
        return chosen, code
    for job_id in ids:
        found = resolve(job_id)
        keep = [i for i in found[1] if visible(found[0], i, history=history)] if found else []
        if not keep:
            suffix = "Error " if dialect == "torque" else ""
            sys.stderr.write(f"qstat: Unknown Job Id {suffix}{job_id}\n")
            code = UNKNOWN_EXIT
            continue
        chosen.append((found[0], keep))  # type: ignore[index]
    return chosen, code


def pbspro_state(job: dict[str, Any], index: str) -> str:
    state: str = job["tasks"][index]["state"]
    if state == "F" and job["indices"] is not None and not finished(job):
        return "X"  # a finished subjob of a live array is "expired"
    return state


def common_attributes(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "Job_Name": job["name"],
        "Job_Owner": job["owner"],
        "queue": job["queue"],
        "server": SERVER,
        "Checkpoint": "u",
        "ctime": time.ctime(job["ctime"]),
        "Hold_Types": "n",
        "Join_Path": job["join"],
        "Keep_Files": "n",
        "Mail_Points": "a",
        "Priority": 0,
        "Rerunable": "True",
    }


def variable_list(job: dict[str, Any]) -> dict[str, str]:
    env = job["env"]
    variables = {
        "PBS_O_HOME": env.get("HOME", "/"),
        "PBS_O_LOGNAME": env.get("USER", "root"),
        "PBS_O_PATH": env.get("PATH", ""),
        "PBS_O_SHELL": "/bin/bash",
        "PBS_O_WORKDIR": job["workdir"],
        "PBS_O_SYSTEM": "Linux",
        "PBS_O_QUEUE": job["queue"],
        "PBS_O_HOST": SERVER,
    }
    odd = os.environ.get("FAKE_PBS_ODD_VARIABLE")
    if odd:
        key, _, value = odd.partition("=")
        variables[key] = value
    return variables


def pbspro_json(ids: list[str], *, subjobs: bool, history: bool) -> tuple[str, int]:
    chosen, code = selected(ids, history=history)
    jobs: dict[str, dict[str, Any]] = {}
    for job, indices in chosen:
        if job["indices"] is None:
            jobs[array_id(job)] = pbspro_task(job, "0")
            continue
        states = [pbspro_state(job, i) for i in job["tasks"]]
        remaining = [i for i, s in zip(job["tasks"], states, strict=True) if s == "Q"]
        parent = common_attributes(job)
        if finished(job):
            parent_state = "F"
        elif any(s != "Q" for s in states):
            parent_state = "B"
        else:
            parent_state = "Q"
        parent["job_state"] = parent_state
        parent.update(
            {
                "Resource_List": resource_list(job),
                "Variable_List": variable_list(job),
                "array": "True",
                "array_state_count": (
                    f"Queued:{states.count('Q')} Running:{states.count('R')} "
                    f"Exiting:{states.count('E')} Expired:{states.count('X') + states.count('F')} "
                ),
                "array_indices_submitted": f"{job['indices'][0]}-{job['indices'][-1]}",
                "array_indices_remaining": compress(remaining) or "-",
                "Submit_arguments": job["submit_args"],
                "project": "_pbs_project_default",
            }
        )
        if job["limit"]:
            parent["max_run_subjobs"] = job["limit"]
        if len(indices) == len(job["tasks"]):  # asked for the array, not one subjob
            jobs[array_id(job)] = parent
        if subjobs or len(indices) < len(job["tasks"]):
            for index in indices:
                jobs[task_id(job, index)] = pbspro_task(job, index)
    return json_document(jobs), code


def pbspro_task(job: dict[str, Any], index: str) -> dict[str, Any]:
    task = job["tasks"][index]
    attrs = common_attributes(job)
    attrs["job_state"] = pbspro_state(job, index)
    if task["pid"]:
        attrs["exec_host"] = f"{SERVER}/0"
        attrs["session_id"] = task["pid"]
    attrs["Resource_List"] = resource_list(job)
    if task["stime"]:
        attrs["stime"] = time.ctime(task["stime"])
    attrs["Variable_List"] = variable_list(job)
    attrs["euser"] = job["env"].get("USER", "root")
    if job["indices"] is not None:
        attrs["array_id"] = array_id(job)
        attrs["array_index"] = int(index)
    if task["exit"] is not None:
        attrs["Exit_status"] = task["exit"]
    attrs["Submit_arguments"] = job["submit_args"]
    attrs["project"] = "_pbs_project_default"
    attrs["Submit_Host"] = SERVER
    return attrs


def resource_list(job: dict[str, Any]) -> dict[str, Any]:
    resources: dict[str, Any] = {"ncpus": 1, "nodect": 1, "place": "pack"}
    for spec in job["resources"]:
        for item in spec.split(","):
            key, _, value = item.partition("=")
            resources[key] = int(value) if value.isdigit() else value
    return resources


def compress(indices: list[str]) -> str:
    """``["2", "3", "5"]`` -> ``"2-3,5"`` as in array_indices_remaining."""
    runs: list[list[int]] = []
    for n in sorted(int(i) for i in indices):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def json_document(jobs: dict[str, dict[str, Any]]) -> str:
    """Print like PBS Pro's qstat -F json: tabs, numbers bare, Variable_List unescaped."""
    lines = [
        "{",
        f'\t"timestamp":{int(time.time())},',
        '\t"pbs_version":"23.06.06",',
        f'\t"pbs_server":"{SERVER}",',
    ]
    if jobs:
        lines.append('\t"Jobs":{')
        for n, (job_id, attrs) in enumerate(jobs.items()):
            lines.append(f'\t\t"{job_id}":{{')
            lines.extend(json_members(attrs, depth=3))
            lines.append("\t\t}" + ("," if n < len(jobs) - 1 else ""))
        lines.append("\t}")
    else:
        lines[-1] = lines[-1].rstrip(",")
    lines.append("}")
    return "\n".join(lines) + "\n"


def json_members(attrs: dict[str, Any], *, depth: int, raw: bool = False) -> list[str]:
    indent = "\t" * depth
    lines: list[str] = []
    for n, (key, value) in enumerate(attrs.items()):
        comma = "," if n < len(attrs) - 1 else ""
        if isinstance(value, dict):
            lines.append(f'{indent}"{key}":{{')
            lines.extend(json_members(value, depth=depth + 1, raw=key == "Variable_List"))
            lines.append(f"{indent}}}{comma}")
        elif isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            lines.append(f'{indent}"{key}":{value}{comma}')
        else:
            text = str(value) if raw else json.dumps(str(value))[1:-1]
            lines.append(f'{indent}"{key}":"{text}"{comma}')
    return lines


def torque_xml(ids: list[str], *, expand: bool) -> tuple[str, int]:
    chosen, code = selected(ids, history=True)
    data = ET.Element("Data")
    for job, indices in chosen:
        if not expand and len(indices) == len(job["tasks"]) and job["indices"] is not None:
            torque_job(data, job, None)
        else:
            for index in indices:
                torque_job(data, job, index)
    text = ET.tostring(data, encoding="unicode") if len(data) else ""
    return f'<?xml version="1.0"?>\n{text}\n', code


def torque_job(data: ET.Element, job: dict[str, Any], index: str | None) -> None:
    element = ET.SubElement(data, "Job")
    if index is None:
        tasks = job["tasks"].values()
        states = {t["state"] for t in tasks}
        state = "R" if "R" in states else "Q" if "Q" in states else "C"
        fields: dict[str, Any] = {"Job_Id": array_id(job), "Job_Name": job["name"]}
    else:
        task = job["tasks"][index]
        state = {"F": "C"}.get(task["state"], task["state"])
        fields = {"Job_Id": task_id(job, index), "Job_Name": f"{job['name']}-{index}"}
    fields.update(
        {
            "Job_Owner": job["owner"],
            "job_state": state,
            "queue": job["queue"],
            "server": SERVER,
            "Checkpoint": "u",
            "ctime": int(job["ctime"]),
            "Join_Path": job["join"],
            "Priority": 0,
            "Resource_List": {"nodect": 1, "nodes": "1:ppn=1"},
            "Variable_List": ",".join(
                f"{k}={v.replace(',', chr(92) + ',')}" for k, v in variable_list(job).items()
            ),
        }
    )
    if index is None:
        request = compress([str(i) for i in job["indices"]])
        fields["job_array_request"] = request + (f"%{job['limit']}" if job["limit"] else "")
    else:
        task = job["tasks"][index]
        if task["pid"]:
            fields["exec_host"] = f"{SERVER}/0"
            fields["session_id"] = task["pid"]
        if task["exit"] is not None:
            fields["exit_status"] = task["exit"]
        fields["job_array_id"] = index
    fields["submit_args"] = job["submit_args"]
    for key, value in fields.items():
        child = ET.SubElement(element, key)
        if isinstance(value, dict):
            for sub_key, sub_value in value.items():
                ET.SubElement(child, sub_key).text = str(sub_value)
        else:
            child.text = str(value)


COMMANDS = {"qsub": qsub, "qstat": qstat, "qdel": qdel}


def main(command: str, argv: list[str]) -> None:
    if command == "supervise":
        supervise(int(argv[0]))
        return
    COMMANDS[command](argv)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
