"""A private one-node Slurm for a test: munged, slurmctld and slurmd on free ports, everything in one folder.

    with slurm_cluster(folder) as env:   # env: os.environ with SLURM_CONF, for sbatch, squeue, scontrol, scancel
        subprocess.run(["sbatch", ...], env=env)

The daemons run in the foreground as children of the test (root may run them: munged --force, SlurmUser=root); on the
way out, whatever happened, the jobs are cancelled, the daemons stopped, and any process still working in `folder`
(a job's step, a run) is ended by its id. Slurm's requeue delay (AuthInfo's cred_expire, 120 s by default) is cut
to a few seconds, and the scheduler looks at its queue every second or two, so that a requeued job starts again
quickly.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str | None:
    """Why no private Slurm can start here (one line that says how to get it), or None."""
    absent = [name for name in (*DAEMONS, "sbatch", "squeue", "scontrol", "scancel", "sinfo") if not shutil.which(name)]
    if absent:
        return f"no Slurm here ({', '.join(absent)} missing): sudo apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return "the private Slurm runs its daemons as root (SlurmdUser=root): run as root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: str, munge_socket: str, cpus: int) -> str:
    host = socket.gethostname().split(".")[0]
    lines = [
        "ClusterName=hadamardtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket},cred_expire=5",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={folder}/state",
        f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid",
        f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log",
        f"SlurmdLogFile={folder}/slurmd.log",
        f"PlugStackConfig={folder}/plugstack.conf",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=1,bf_interval=1",
        "ReturnToService=2",
        "KillWait=10",
        "MinJobAge=3600",
        f"NodeName=node1 NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        "PartitionName=test Nodes=node1 Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def wait_for(what: str, check, timeout: float, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {log}:\n{tail(log)}" for log in logs)
            raise TimeoutError(f"{what}: not within {timeout:.0f} s{tails}")
        time.sleep(0.2)


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as error:
        return str(error)


def processes_in(folder: str) -> list[int]:
    """The processes (other than this one) working in `folder`: their working directory or command line is in it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        if cwd.startswith(folder) or folder in cmdline:
            found.append(int(pid))
    return found


@contextlib.contextmanager
def slurm_cluster(folder: str, cpus: int = 2, work=()):
    """Starts the private Slurm in `folder` (short: the munge socket's path must fit 108 bytes); yields the
    environment its clients need. `work`: more folders whose processes are ended on the way out (a job's runs)."""
    folder = os.path.abspath(folder)
    for sub in ("munge", "state", "spool"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    os.chmod(os.path.join(folder, "munge"), 0o700)
    key = os.path.join(folder, "munge", "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(key, 0o400)
    munge_socket = os.path.join(folder, "munge", "socket")
    conf = os.path.join(folder, "slurm.conf")
    with open(conf, "w") as f:
        f.write(slurm_conf(folder, munge_socket, cpus))
    open(os.path.join(folder, "plugstack.conf"), "w").close()
    env = dict(os.environ, SLURM_CONF=conf)
    for name in list(env):  # a Slurm job's own variables would point the clients elsewhere
        if name.startswith("SLURM_") and name != "SLURM_CONF":
            del env[name]
    logs = [os.path.join(folder, name) for name in ("munged.log", "slurmctld.log", "slurmd.log")]
    daemons = []
    devnull = subprocess.DEVNULL
    try:
        munged = ["munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}"]
        munged += [f"--pid-file={folder}/munge/munged.pid", f"--log-file={logs[0]}", f"--seed-file={folder}/munge/seed"]
        daemons.append(subprocess.Popen(munged, stdout=devnull, stderr=devnull))
        wait_for("munged's socket", lambda: os.path.exists(munge_socket), 20, logs[:1])
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", conf], env=env, stdout=devnull, stderr=devnull))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-N", "node1", "-f", conf], env=env, stdout=devnull,
                                        stderr=devnull))  # fmt: skip

        def node_idle() -> bool:
            for daemon, name in zip(daemons, DAEMONS):
                if daemon.poll() is not None:
                    raise RuntimeError(f"{name} stopped (exit {daemon.returncode}):\n{tail(logs[DAEMONS.index(name)])}")
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            return state.stdout.strip() == "idle"

        wait_for("the node idle in sinfo", node_idle, 60, logs)
        yield env
    finally:
        if len(daemons) == 3 and daemons[1].poll() is None:
            subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        for pid in [pid for place in (folder, *map(str, work)) for pid in processes_in(os.path.abspath(place))]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
