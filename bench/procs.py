"""Processes the harness starts: ports, CPU pinning, process trees and their memory."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def taskset_prefix(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus]


def wait_for_port(port: int, deadline: float, process: subprocess.Popen[bytes]) -> bool:
    """True once something accepts on the port; False if the process died or the deadline passed."""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def child_pids_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name may hold spaces and parentheses; the fields after its last ')' do not.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def process_tree(root_pid: int) -> list[int]:
    """The root and all its descendants (server masters fork their workers)."""
    children = child_pids_by_parent()
    tree, pending = [], [root_pid]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_mib(root_pid: int) -> float:
    """Sum of RSS over the process tree; pages shared between forked workers count once per process."""
    return sum(rss_bytes(pid) for pid in process_tree(root_pid)) / 2**20


def worker_rss_mib(root_pid: int) -> float:
    """RSS of the largest worker: the processes under the root (a supervisor that forks workers), or the root
    itself when it serves alone. What "RSS per worker" targets compare with."""
    tree = process_tree(root_pid)
    workers = tree[1:] or tree
    return max((rss_bytes(pid) for pid in workers), default=0) / 2**20


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent running processes since boot.

    Interrupt time is left out: no process is charged for it, so it could not be told apart from ours.
    """
    user, nice, system = (int(v) for v in Path("/proc/stat").read_text().split()[1:4])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every descendant it has waited for (servers reap their workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def tree_cpu_seconds(root_pid: int) -> float:
    ticks = 0
    for pid in process_tree(root_pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy time next to the harness's own, to tell how much was someone else's."""

    taken_at: float
    machine_busy_s: float
    harness_s: float


def cpu_snapshot(live_roots: set[int]) -> CpuSnapshot:
    """`live_roots`: running process trees the harness started and has not reaped yet."""
    harness_s = own_cpu_seconds() + sum(tree_cpu_seconds(pid) for pid in live_roots)
    return CpuSnapshot(time.perf_counter(), machine_busy_seconds(), harness_s)


def others_cpu_pct(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Share of the machine's CPU that processes the harness did not start used between two snapshots."""
    others_s = (after.machine_busy_s - before.machine_busy_s) - (after.harness_s - before.harness_s)
    capacity_s = (after.taken_at - before.taken_at) * (os.cpu_count() or 1)
    return round(max(0.0, others_s) / capacity_s * 100, 1)


def start_process(
    command: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start in a new session so the whole tree (master and workers) can be stopped by its group id."""
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived their master


def log_tail(log_path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
