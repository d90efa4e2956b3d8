"""`gateway serve --workers N`: N worker processes sharing one port (SO_REUSEPORT), supervised.

The supervisor only starts, watches and signals its workers: SIGTERM/SIGINT drain them all,
SIGHUP reloads them all, a worker that dies is started again. Metrics stay correct across
workers through prometheus-client's multiprocess mode: a fresh directory is made for them when
PROMETHEUS_MULTIPROC_DIR is not set, and removed at exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from types import FrameType

import structlog
from prometheus_client.multiprocess import mark_process_dead

from gateway.config import GatewayConfig
from gateway.exposition import MULTIPROC_ENV
from gateway.logs import configure_logging
from gateway.sites import check_free, listen_addresses

POLL_S = 0.1
RESTART_DELAY_S = 1.0
# A worker that exits with an error this soon after starting has a problem a restart will not
# fix (a port in use, a bad config): the whole group stops with its exit code. A worker killed
# by a signal (the OOM killer, say) is started again.
EARLY_EXIT_S = 5.0
# How a worker ends when told to stop: drained (0), or ended by the SIGTERM itself, which
# reached it while it was starting, before it served anything.
STOPPED = frozenset({0, -signal.SIGTERM})

_log = structlog.get_logger("gateway.workers")


@dataclass(slots=True)
class Worker:
    proc: subprocess.Popen[bytes]
    started: float
    # Started in place of one that died: the group serves already.
    replacement: bool = False


class Supervisor:
    def __init__(self, command: list[str], env: dict[str, str], count: int) -> None:
        self.command, self.env, self.count = command, env, count
        self.workers: list[Worker] = []
        self.stopping = False
        self.exit_code = 0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self.workers = [self._spawn(replacement=False) for _ in range(self.count)]
        _log.info("workers_started", pids=[w.proc.pid for w in self.workers])
        while not (self.stopping and all(w.proc.poll() is not None for w in self.workers)):
            for index, worker in enumerate(self.workers):
                code = worker.proc.poll()
                if code is not None and not self.stopping:
                    self.workers[index] = self._replace(worker, code)
            time.sleep(POLL_S)
        codes = [w.proc.returncode for w in self.workers]
        _log.info("workers_stopped", exit_codes=codes)
        return self.exit_code or (0 if all(c in STOPPED for c in codes) else 1)

    def _spawn(self, *, replacement: bool) -> Worker:
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
        # passes one SIGTERM on (a second signal would cut the workers' streams).
        proc = subprocess.Popen(self.command, env=self.env, process_group=0)  # noqa: S603
        return Worker(proc, time.monotonic(), replacement)

    def _replace(self, worker: Worker, code: int) -> Worker:
        _forget_metrics(worker.proc.pid, self.env.get(MULTIPROC_ENV))
        failed_at_start = code > 0 and time.monotonic() - worker.started < EARLY_EXIT_S
        if failed_at_start and not worker.replacement:
            _log.error("worker_failed_at_start", pid=worker.proc.pid, exit_code=code)
            self.exit_code = code or 1
            self._stop_all()
            return worker
        # A replacement that fails at start (the file was made invalid since the group
        # started, say) must not stop the workers that serve: it is tried again.
        event = "worker_failed_at_start" if failed_at_start else "worker_died"
        _log.error(event, pid=worker.proc.pid, exit_code=code)
        time.sleep(RESTART_DELAY_S)
        if self.stopping:  # a SIGTERM came during the pause
            return worker
        replacement = self._spawn(replacement=True)
        _log.info("worker_restarted", pid=replacement.proc.pid)
        return replacement

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        # A second signal is passed on too: the workers then stop waiting for their streams.
        self._stop_all()

    def _stop_all(self) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self._signal_all(signal.SIGHUP)

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signum)


def _forget_metrics(pid: int, directory: str | None) -> None:
    """A dead worker's live gauges must not count in the sum any more."""
    if directory:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _addresses_free(config: GatewayConfig) -> bool:
    """Whether nothing listens on the gateway's addresses yet (the workers' SO_REUSEPORT
    would not tell them); logged as a single process logs it when not."""
    for host, port in listen_addresses(config):
        try:
            check_free(host, port)
        except OSError as exc:
            _log.error("cannot_listen", host=host, port=port, error=str(exc))
            return False
    return True


def supervise(config_path: str, config: GatewayConfig) -> int:
    """Run `config.server.workers` workers until SIGTERM; the exit code of the group."""
    configure_logging(config.logging)
    if not _addresses_free(config):
        return 1
    env = dict(os.environ)
    made = None
    if not env.get(MULTIPROC_ENV):
        made = tempfile.mkdtemp(prefix="llm-gateway-metrics-")
        env[MULTIPROC_ENV] = made
    server = config.server
    command = [sys.executable, "-m", "gateway", "serve", "--config", config_path]
    command += ["--host", server.host, "--port", str(server.port), "--supervised"]
    _log.info("supervisor", workers=server.workers, metrics_dir=env[MULTIPROC_ENV])
    try:
        return Supervisor(command, env, server.workers).run()
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
