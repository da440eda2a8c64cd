"""A throwaway single-node SLURM cluster for tests: Debian's slurm-wlm (22.05) and munge.

Everything it writes lives in one temp folder (munge key and socket, slurm.conf, state and
spool dirs, logs) and it listens on free loopback ports, so it shares nothing with a SLURM
or munge the machine may already run. The daemons run in the foreground as children of
the test, as root (slurmd must be root to start jobs); `stop()` cancels the jobs and ends them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
PACKAGES = ("slurm-wlm", "munge")  # Debian's: SLURM 22.05 on Debian 12


class ClusterError(RuntimeError):
    """SLURM could not be started here; the message says why (and shows the daemons' logs)."""


class SlurmUnavailable(ClusterError):
    """SLURM is not installed and cannot be installed here (not root, or no apt-get)."""


def _missing() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def ensure_installed() -> None:
    """Install Debian's slurm-wlm and munge when they are missing and this runs as root, so
    the README's test command passes on a fresh machine; SlurmUnavailable where it cannot."""
    missing = _missing()
    if not missing:
        return
    why = f"SLURM is not installed ({', '.join(missing)} not found)"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"{why} and cannot be installed here (needs root and apt-get): "
                               f"apt-get install -y {' '.join(PACKAGES)}")  # fmt: skip
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{why}; `{' '.join(cmd)}` failed: {proc.stderr.strip()[-2000:]}")
    if _missing():
        raise SlurmUnavailable(f"{why}; after installing {PACKAGES}, still missing: {', '.join(_missing())}")
    # shown in pytest's warnings summary (a worker's own output is not, under pytest-xdist)
    warnings.warn(f"{why}: tests/test_slurm.py installed Debian's {' and '.join(PACKAGES)} with apt-get",
                  stacklevel=2)  # fmt: skip


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    partition: str
    shim_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Variables a SLURM client (sbatch, squeue, the jobs' srun) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf), "PATH": f"{self.shim_dir}{os.pathsep}{os.environ['PATH']}"}

    def client(self, *args: str) -> str:
        env = {**os.environ, **self.env}
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed: {proc.stderr.strip()}\n{self.logs()}")
        return proc.stdout

    def logs(self) -> str:
        parts = []
        for log in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job of this cluster, then end the daemons and remove the folder."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user", "root"], env={**os.environ, **self.env},
                           capture_output=True, timeout=30, check=False)
        for name in ("slurmd", "slurmctld", "munged"):  # clients first, munge last
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def slurm_conf(root: Path, node: str, cpus: int, memory_mb: int, partition: str, munge_socket: Path) -> str:
    """A single-node cluster without accounting, cgroups or task binding."""
    return f"""\
ClusterName=usseg-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
# Memory is not a consumable here, and the node may declare more than it has
# (config_overrides), so the profile's mem_mb requests are submitted unchanged.
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to squeue (the status command without accounting) for an hour.
MinJobAge=3600
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _start(cluster: SlurmCluster, name: str, *args: str) -> None:
    out = open(cluster.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 (the daemon keeps it)
    cluster.procs[name] = subprocess.Popen(
        [name, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "SLURM_CONF": str(cluster.conf)},
    )


def _wait(cluster: SlurmCluster, what: str, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with {proc.returncode} while waiting for {what}\n{cluster.logs()}"
                )
        if ready():
            return
        time.sleep(0.5)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{cluster.logs()}")


def _node_idle(cluster: SlurmCluster) -> bool:
    proc = subprocess.run(["sinfo", "--noheader", "--format=%T"], env={**os.environ, **cluster.env},
                          capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and proc.stdout.split() == ["idle"]


def start_cluster(partition: str, min_memory_mb: int = 0) -> SlurmCluster:
    """munged, slurmctld and slurmd for one node (this host) with one partition.

    The node declares this machine's CPUs and at least ``min_memory_mb`` of memory.
    Raises ClusterError, saying why, when SLURM cannot run here.
    """
    if os.geteuid() != 0:
        raise SlurmUnavailable("a SLURM test cluster needs root (slurmd starts the jobs as root)")
    ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="usseg-slurm-"))
    root.chmod(0o755)  # munged wants its socket's folders searchable by everyone
    for sub in ("state", "spool", "log", "run", "bin"):
        (root / sub).mkdir()
    (root / "munge").mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = root / "run" / "munge.socket"
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, node, os.cpu_count() or 1, max(_memory_mb(), min_memory_mb), partition,
                               munge_socket))
    # snakemake-executor-plugin-slurm-jobstep drops SLURM_* variables, SLURM_CONF included, before
    # the srun it runs inside each job; this cluster's config is not at the default path.
    shim = root / "bin" / "srun"
    shim.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun")} "$@"\n')
    shim.chmod(0o755)
    cluster = SlurmCluster(root=root, conf=conf, partition=partition, shim_dir=root / "bin")
    try:
        _start(cluster, "munged", "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
               f"--log-file={root / 'log' / 'munged.log'}", f"--pid-file={root / 'run' / 'munged.pid'}",
               f"--seed-file={root / 'munge' / 'seed'}")
        _wait(cluster, "the munge socket", munge_socket.exists, timeout=20)
        _start(cluster, "slurmctld", "-D", "-f", str(conf))
        _start(cluster, "slurmd", "-D", "-f", str(conf), "-N", node)
        _wait(cluster, f"node {node} to be idle in partition {partition}", lambda: _node_idle(cluster))
    except BaseException:
        cluster.stop()
        raise
    return cluster
