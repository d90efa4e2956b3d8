"""The processes under test: started on chosen CPUs, read from /proc, stopped.

CPU time is utime + stime from `/proc/<pid>/stat` (whole process tree, so a supervisor with
worker processes is counted whole); memory is VmRSS and VmHWM from `/proc/<pid>/status`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


class BenchError(Exception):
    """The benchmark cannot go on (a process did not start, wrk is missing, ...)."""


@dataclass(frozen=True, slots=True)
class Cpus:
    """Where the load (wrk, mock, streaming client) and the proxy under test run."""

    load: frozenset[int] | None
    proxy: frozenset[int] | None
    # Where `--workers 2` runs, a CPU for each worker in turn, the proxy's first; None when
    # nothing is pinned. With two CPUs the second worker's is the load's.
    workers: tuple[int, ...] | None
    note: str

    @property
    def workers_beside_load(self) -> bool:
        """Whether a worker shares its CPU with wrk, the mock and Redis (a two-CPU machine)."""
        return bool(self.workers and self.load and self.load.intersection(self.workers))


def choose_cpus(available: Sequence[int], pin: bool) -> Cpus:
    """The first CPU for the load, the second for the proxy; two workers get the proxy's and
    the third, or, with two CPUs, the proxy's and the load's."""
    cpus = sorted(available)
    if not pin or len(cpus) < 2:
        return Cpus(None, None, None, f"not pinned ({len(cpus)} CPUs available)")
    load, proxy = frozenset(cpus[:1]), frozenset(cpus[1:2])
    workers = (cpus[1], cpus[2] if len(cpus) >= 3 else cpus[0])
    note = f"wrk, mock and streaming client on CPU {cpus[0]}; proxy under test on CPU {cpus[1]}"
    return Cpus(load, proxy, workers, note)


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of /proc/<pid>/stat the benchmark uses (times in clock ticks)."""

    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def ticks(self) -> int:
        """The process's own CPU time plus that of children it has reaped."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> Stat:
    # The command name (field 2) is in parentheses and may contain spaces.
    rest = text[text.rindex(")") + 2 :].split()
    return Stat(int(rest[1]), int(rest[11]), int(rest[12]), int(rest[13]), int(rest[14]))


def parse_status_kib(text: str, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM); 0 when absent."""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def parse_cpu_times(text: str) -> dict[int, tuple[int, int]]:
    """/proc/stat per CPU: (busy ticks, total ticks). Idle, iowait and steal (time the
    hypervisor gave to another machine) are not busy."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + ticks[4] + ticks[7]
        out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


def busy_percent(
    before: Mapping[int, tuple[int, int]],
    after: Mapping[int, tuple[int, int]],
    cpus: frozenset[int],
) -> float | None:
    """How busy `cpus` were between two /proc/stat readings, in percent of their time."""
    busy = sum(after[c][0] - before[c][0] for c in cpus if c in after and c in before)
    total = sum(after[c][1] - before[c][1] for c in cpus if c in after and c in before)
    return round(100 * busy / total, 1) if total > 0 else None


def other_percent(
    before: Mapping[int, tuple[int, int]],
    after: Mapping[int, tuple[int, int]],
    accounted_ticks: int,
) -> float | None:
    """Busy time no process of the run accounts for, in percent of one core: the kernel's
    network processing (softirq, not charged to any process) and any other job."""
    cpus = [c for c in after if c in before]
    busy = sum(after[c][0] - before[c][0] for c in cpus)
    total = sum(after[c][1] - before[c][1] for c in cpus)
    if total <= 0 or not cpus:
        return None
    per_core = total / len(cpus)
    return round(max(0.0, 100 * (busy - accounted_ticks) / per_core), 1)


def own_ticks() -> int:
    """This process's CPU and that of the children it has waited for (wrk, the stream client)."""
    t = os.times()
    return round((t.user + t.system + t.children_user + t.children_system) * clock_ticks())


def cpu_times() -> dict[int, tuple[int, int]]:
    return parse_cpu_times((PROC / "stat").read_text())


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process ended between listing and reading
        return None


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it."""
    children = _children_by_parent()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_ticks(root: int) -> int:
    total = 0
    for pid in process_tree(root):
        text = _read(PROC / str(pid) / "stat")
        total += parse_stat(text).ticks if text is not None else 0
    return total


def tree_memory_kib(root: int) -> tuple[int, int, int]:
    """(summed VmRSS, summed VmHWM, largest VmRSS of one process) over the tree, in KiB."""
    rss = hwm = largest = 0
    for pid in process_tree(root):
        text = _read(PROC / str(pid) / "status")
        if text is None:
            continue
        one = parse_status_kib(text, "VmRSS")
        rss, hwm, largest = rss + one, hwm + parse_status_kib(text, "VmHWM"), max(largest, one)
    return rss, hwm, largest


def find_process(name: str) -> int | None:
    """The one process whose command name is `name` (e.g. redis-server); None if not exactly one."""
    found = [
        int(e.name)
        for e in PROC.iterdir()
        if e.name.isdigit() and (_read(e / "comm") or "").strip() == name
    ]
    return found[0] if len(found) == 1 else None


def pin_self(cpus: frozenset[int] | None) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def place_workers(root: int, cpus: Sequence[int], count: int, timeout_s: float = 20.0) -> None:
    """Each of the `count` worker processes of the supervisor `root` (its children, in the
    order they were started), every thread of it, on a CPU of its own: the i-th on `cpus[i]`."""
    deadline = time.monotonic() + timeout_s
    while True:
        workers = sorted(_children_by_parent().get(root, []))
        if len(workers) >= count:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{count} workers expected under {root}, found {len(workers)}")
        time.sleep(0.05)
    for pid, cpu in zip(workers, cpus, strict=False):
        for tid in _threads(pid):
            os.sched_setaffinity(tid, {cpu})


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        text = _read(entry / "stat") if entry.name.isdigit() else None
        if text is not None:
            children.setdefault(parse_stat(text).ppid, []).append(int(entry.name))
    return children


@contextmanager
def moved(pid: int | None, cpus: frozenset[int] | None, name: str) -> Iterator[str]:
    """Every thread of `pid` (a service of the machine, such as its Redis) on `cpus` for the
    block, and back where it was after; yields what was done, for the report. The proxy's CPU
    is then the proxy's alone: a Redis scheduled there took the gateway's time (in a run
    where it was moved, about 5 % more of the gateway's CPU per request, 3 ms more at p99)."""
    if pid is None or cpus is None:
        yield f"{name} not moved ({'not found' if pid is None else 'nothing pinned'})"
        return
    before: dict[int, set[int]] = {}
    refused: OSError | None = None
    try:
        for tid in _threads(pid):
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
    except OSError as exc:  # not ours to move (another user's), or it ended: left alone
        _restore(before)
        before.clear()
        refused = exc
    try:
        if refused is not None:
            yield f"{name} not moved ({refused.strerror or refused})"
        else:
            yield f"{name} moved to CPU {','.join(map(str, sorted(cpus)))} for the run"
    finally:
        _restore(before)


def _threads(pid: int) -> list[int]:
    return sorted(int(entry.name) for entry in (PROC / str(pid) / "task").iterdir())


def _restore(before: Mapping[int, set[int]]) -> None:
    for tid, cpus in before.items():
        with suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)


class Proc:
    """One process under test, started with its output in `log` and on its CPUs."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        cpus: frozenset[int] | None,
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cpus = cpus
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd: Path | None = None  # where it starts (default: this process's directory)
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise BenchError(f"{self.name} is not running")
        return self._popen.pid

    def start(self) -> None:
        cpus = self.cpus
        with self.log.open("wb") as log:
            self._popen = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                self.argv,
                stdout=subprocess.DEVNULL,  # the gateway's request log: one line per request
                stderr=log,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group, stopped as one
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )

    def wait_ready(self, url: str, timeout_s: float = 20.0) -> None:
        """Until `url` answers at all (any HTTP status counts as up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._popen is not None and self._popen.poll() is not None:
                raise BenchError(f"{self.name} exited: see {self.log}")
            try:
                with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - a loopback URL
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer at {url} within {timeout_s:g}s")

    def ticks(self) -> int:
        return tree_ticks(self.pid)

    def memory_kib(self) -> tuple[int, int, int]:
        return tree_memory_kib(self.pid)

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            return
        os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
