"""The benchmark's pure parts: options, phases, wrk output, /proc readings, CPU accounting."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.bench import machine, ttft
from gateway.bench.cli import options_from
from gateway.bench.machine import cpu_model
from gateway.bench.plan import LONG_WORDS, QUICK, Options, stream_phases, wrk_phases
from gateway.bench.procs import (
    BenchError,
    busy_percent,
    choose_cpus,
    moved,
    other_percent,
    parse_cpu_times,
    parse_stat,
    parse_status_kib,
    place_workers,
    process_tree,
)
from gateway.bench.results import cpu_us_per_request
from gateway.bench.runner import _placement
from gateway.bench.ttft import percentile, summary
from gateway.bench.wrk import parse_wrk, script_path, wrk_argv, wrk_rps

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:19090
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   222.67us  178.92us   4.40ms   98.43%
    Req/Sec     9.35k   270.94     9.97k    72.73%
  10220 requests in 1.10s, 5.17MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   9289.84
Transfer/sec:      4.70MB
BENCH_JSON {"requests":10220,"duration_us":1100126,"bytes":5416822,"connect":0,"read":1,\
"write":0,"status":3,"timeout":2,"p50_us":200,"p90_us":245,"p99_us":526,"p999_us":3321,\
"max_us":4396,"mean_us":222.7}
"""


def test_parse_wrk_reads_the_summary_line_in_milliseconds() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 10220
    assert result.duration_s == pytest.approx(1.100126)
    assert result.rps == pytest.approx(10220 / 1.100126, abs=0.1)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (0.2, 0.245, 0.526)
    assert result.p999_ms == 3.321
    assert result.max_ms == 4.396


def test_parse_wrk_counts_socket_errors_and_non_2xx_as_errors() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.non_2xx == 3
    assert result.errors == 1 + 2 + 3


def test_parse_wrk_without_a_summary_line_fails_with_the_output() -> None:
    with pytest.raises(BenchError, match="no summary line"):
        parse_wrk("Running 1s test @ http://x\nunable to connect\n")


def test_wrk_rps_reads_wrks_own_line() -> None:
    assert wrk_rps(WRK_OUTPUT) == 9289.84
    assert wrk_rps("nothing") is None


def test_wrk_argv_uses_one_thread_the_script_and_its_arguments() -> None:
    argv = wrk_argv(
        "/usr/bin/wrk",
        "http://127.0.0.1:1",
        connections=16,
        duration_s=9.6,
        script=script_path(),
        script_args=["/v1/chat/completions", "Bearer k"],
    )
    assert argv[:4] == ["/usr/bin/wrk", "-t1", "-c16", "-d10s"]
    assert argv[argv.index("-s") + 1].endswith("requests.lua")
    assert argv[-3:] == ["--", "/v1/chat/completions", "Bearer k"]


def test_the_lua_script_ships_with_the_package() -> None:
    text = script_path().read_text()
    assert "BENCH_JSON" in text
    assert "function request()" in text


def test_parse_stat_takes_times_after_a_command_name_with_spaces() -> None:
    line = "4242 (python -m x) S 17 4242 4242 0 -1 4194560 1 0 0 0 150 25 7 3 20 0 1 0 5 6 7"
    stat = parse_stat(line)
    assert (stat.ppid, stat.utime, stat.stime, stat.cutime, stat.cstime) == (17, 150, 25, 7, 3)
    assert stat.ticks == 185


def test_parse_status_reads_kib_fields() -> None:
    text = "Name:\tpython\nVmHWM:\t  81234 kB\nVmRSS:\t  70000 kB\n"
    assert parse_status_kib(text, "VmRSS") == 70000
    assert parse_status_kib(text, "VmHWM") == 81234
    assert parse_status_kib(text, "VmSwap") == 0


def test_steal_time_is_not_busy() -> None:
    times = parse_cpu_times("cpu0 100 0 0 800 0 0 0 100 0 0\n")
    assert times == {0: (100, 1000)}


def test_busy_percent_of_one_core_between_two_readings() -> None:
    before = parse_cpu_times(
        "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 0 0 900 0 0 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0 0 0\n"
    )
    after = parse_cpu_times(
        "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 150 0 0 950 0 0 0 0 0 0\ncpu1 90 10 0 1000 0 0 0 0 0 0\n"
    )
    assert busy_percent(before, after, frozenset({0})) == 50.0
    assert busy_percent(before, after, frozenset({1})) == 100.0
    assert busy_percent(before, before, frozenset({0})) is None


def test_other_percent_is_busy_time_the_run_did_not_account_for() -> None:
    before = {0: (0, 1000), 1: (0, 1000)}
    after = {0: (500, 2000), 1: (300, 2000)}
    # 800 busy ticks over two cores of 1000 ticks each; the run accounts for 600 of them.
    assert other_percent(before, after, 600) == 20.0
    assert other_percent(before, after, 900) == 0.0
    assert other_percent(before, before, 0) is None


def test_cpu_us_per_request_from_clock_ticks() -> None:
    # 250 ticks of 10 ms = 2.5 s of CPU over 10,000 requests = 250 µs each.
    assert cpu_us_per_request(250, 100, 10_000) == 250.0
    assert cpu_us_per_request(250, 100, 0) is None


def test_choose_cpus_gives_the_load_the_first_cpu_and_the_proxy_the_second() -> None:
    cpus = choose_cpus([1, 0], pin=True)
    assert cpus.load == frozenset({0})
    assert cpus.proxy == frozenset({1})


def test_two_workers_get_the_proxys_cpu_and_the_third_when_there_is_one() -> None:
    own = choose_cpus([0, 1, 2, 3], pin=True)
    assert own.workers == (1, 2)
    assert not own.workers_beside_load


def test_with_two_cpus_the_second_worker_runs_beside_the_load() -> None:
    shared = choose_cpus([0, 1], pin=True)
    assert shared.workers == (1, 0)
    assert shared.workers_beside_load
    assert choose_cpus([0, 1], pin=False).workers is None


def test_the_workers_note_says_where_they_ran_and_why() -> None:
    unpinned = choose_cpus([0, 1], pin=False)
    assert _placement(unpinned).startswith("workers not pinned (2 CPUs available)")
    shared = _placement(choose_cpus([0, 1], pin=True))
    assert shared.startswith("one worker alone on CPU 1, two on CPUs 1 and 0, the second beside")
    assert "projected from the CPU per request" in shared
    own = choose_cpus([0, 1, 2], pin=True)
    assert _placement(own) == "one worker on CPU 1, two on CPUs 1 and 2"


def test_each_worker_of_a_supervisor_is_placed_on_a_cpu_of_its_own() -> None:
    """Every thread of the i-th child goes to the i-th CPU given; the supervisor stays."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to tell the placements apart")
    child = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "time.sleep(60)"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"kids = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in range(2)]\n"
            "print('up', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == b"up\n"
        time.sleep(0.3)  # the children start their threads
        place_workers(parent.pid, (cpus[1], cpus[0]), 2)
        kids = sorted(p for p in process_tree(parent.pid) if p != parent.pid)
        first, second = (list(_affinities(k).values()) for k in kids)
        assert first == [{cpus[1]}, {cpus[1]}]  # the child and its thread
        assert second == [{cpus[0]}, {cpus[0]}]
        assert list(_affinities(parent.pid).values()) == [set(cpus)]  # the supervisor stays
    finally:
        for pid in process_tree(parent.pid)[1:]:
            os.kill(pid, 9)
        parent.kill()
        parent.communicate()


def _affinities(pid: int) -> dict[int, set[int]]:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return {int(t.name): os.sched_getaffinity(int(t.name)) for t in tasks}


def test_a_service_is_moved_whole_to_the_load_cpu_for_the_run_and_put_back() -> None:
    """Redis, a service of the machine, must not take the proxy's CPU during a run; every
    one of its threads is moved, and each goes back where it was."""
    service = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import threading, time\n"
            "for _ in range(2): threading.Thread(target=time.sleep, args=(60,), daemon=True)"
            ".start()\n"
            "print('up', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert service.stdout is not None
        assert service.stdout.readline() == b"up\n"
        before = _affinities(service.pid)
        assert len(before) == 3
        load = frozenset({min(os.sched_getaffinity(0))})
        with moved(service.pid, load, "Redis") as note:
            assert note == f"Redis moved to CPU {min(load)} for the run"
            assert all(cpus == load for cpus in _affinities(service.pid).values())
        assert _affinities(service.pid) == before
    finally:
        service.kill()
        service.communicate()


def test_a_service_that_cannot_be_moved_is_named_in_the_report_and_left_alone() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    time.sleep(0.01)
    with moved(gone.pid, frozenset({0}), "Redis") as note:
        assert note.startswith("Redis not moved (")
    with moved(None, frozenset({0}), "Redis") as note:
        assert note == "Redis not moved (not found)"
    with moved(os.getpid(), None, "Redis") as note:
        assert note == "Redis not moved (nothing pinned)"


def test_choose_cpus_without_pinning_or_with_one_cpu_pins_nothing() -> None:
    for cpus in (choose_cpus([0, 1], pin=False), choose_cpus([0], pin=True)):
        assert cpus.load is None
        assert cpus.proxy is None
        assert "not pinned" in cpus.note


def test_phases_measure_cache_hits_at_the_first_latency_only() -> None:
    phases = wrk_phases(Options(connections=(1, 16), latencies_ms=(0, 50), rounds=1))
    hits = [p for p in phases if p.target == "gateway-hit"]
    assert [(p.latency_ms, p.connections) for p in hits] == [(0, 1), (0, 16)]
    assert len(phases) == 2 * 2 * 4 + 2
    assert phases[0].name == "direct 0ms c1 #1"


def test_phases_measure_direct_before_and_after_the_proxies_taking_turns() -> None:
    phases = wrk_phases(Options(connections=(16,), latencies_ms=(0, 50), rounds=2))
    assert [(p.target, p.round) for p in phases if p.latency_ms == 50] == [
        ("direct", 0),
        ("forwarder", 0),
        ("gateway-miss", 0),
        ("forwarder", 1),
        ("gateway-miss", 1),
        ("direct", 1),
    ]
    assert len(phases) == (2 + 2 * 3) + (2 + 2 * 2)


def test_a_round_count_below_one_is_an_argument_error() -> None:
    with pytest.raises(SystemExit):
        options_from(["--rounds", "0"])
    assert options_from(["--rounds", "5"]).rounds == 5


def test_stream_phases_compare_every_target_at_each_latency_taking_turns() -> None:
    phases = stream_phases(Options(latencies_ms=(0, 50), stream_connections=16, rounds=2))
    assert len(phases) == 18
    turns = [("direct", 0), ("forwarder", 0), ("gateway", 0), ("forwarder", 1), ("gateway", 1)]
    turns.append(("direct", 1))
    assert [(s.target, s.latency_ms, s.round) for s in phases] == [
        (target, latency, round_) for latency in (0, 50, 0) for target, round_ in turns
    ]
    assert {s.connections for s in phases} == {16}
    assert {(s.words, s.chunk_delay_ms) for s in phases[:12]} == {(0, 0)}
    assert {(s.words, s.chunk_delay_ms) for s in phases[12:]} == {(LONG_WORDS, 5)}
    assert phases[-2].name == "gateway 0ms c16 200 words #2"
    assert len(stream_phases(QUICK)) == 3 * 4  # one round: direct, forwarder, gateway, direct


def test_options_default_to_the_documented_full_run() -> None:
    options = options_from([])
    assert options.connections == (1, 16, 64)
    assert options.latencies_ms == (0, 50)
    assert options.duration_s == 10.0
    assert options.rounds == 3
    assert options.redis_url.endswith("/12")
    assert options.soak_s == 0.0
    assert options.pin
    assert options.workers


def test_quick_options_are_short_with_fewer_phases() -> None:
    options = options_from(["--quick", "--out", "/tmp/x"])
    assert options.quick
    assert options.duration_s == QUICK.duration_s < 10
    assert options.connections == (16,)
    assert options.rounds == 1
    assert options.out == "/tmp/x"


def test_explicit_options_override_quick_ones() -> None:
    argv = ["--quick", "--duration", "5", "--connections", "1,64", "--latencies", "50"]
    argv += ["--soak", "120", "--no-workers", "--no-pin", "--redis-url", "redis://h:1/9"]
    options = options_from(argv)
    assert (options.duration_s, options.connections, options.latencies_ms) == (5, (1, 64), (50,))
    assert options.soak_s == 120
    assert not options.workers
    assert not options.pin
    assert options.redis_url == "redis://h:1/9"


@pytest.mark.parametrize("bad", ["", "a,b", "-1", "1,,x"])
def test_a_bad_connection_list_is_an_argument_error(bad: str) -> None:
    with pytest.raises(SystemExit):
        options_from(["--connections", bad])


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([], 50) is None


def test_ttft_summary_is_in_milliseconds() -> None:
    out = summary([0.001, 0.002, 0.003], [0.01, 0.02, 0.03], errors=1)
    assert out["requests"] == 3
    assert out["errors"] == 1
    assert out["ttft_p50_ms"] == 2.0
    assert out["total_p99_ms"] == 30.0


def test_the_streaming_client_runs_with_its_options_and_its_summary_is_read() -> None:
    argv = ttft.command("http://127.0.0.1:1/v1/chat/completions", "Bearer k", 16, 50, 2.5)
    assert argv[:3] == [sys.executable, "-m", "gateway.bench.ttft"]
    assert argv[3:] == [
        "--url",
        "http://127.0.0.1:1/v1/chat/completions",
        "--auth",
        "Bearer k",
        "--connections",
        "16",
        "--latency-ms",
        "50",
        "--duration",
        "2.5",
    ]
    long = ttft.command(
        "http://127.0.0.1:1/v1", "Bearer k", 16, 0, 2.5, words=200, chunk_delay_ms=5
    )
    assert long[-6:] == ["--words", "200", "--chunk-delay-ms", "5", "--duration", "2.5"]
    line = '{"requests": 3, "errors": 0, "ttft_p50_ms": 51.5}'
    echo = [sys.executable, "-c", f"print('warming up'); print({line!r})"]
    assert ttft.run(echo, 1.0) == {"requests": 3, "errors": 0, "ttft_p50_ms": 51.5}
    with pytest.raises(BenchError, match=r"streaming client failed: .*no server"):
        ttft.run([sys.executable, "-c", "raise SystemExit('no server')"], 1.0)


def test_cpu_model_from_cpuinfo() -> None:
    text = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n"
    assert cpu_model(text) == "Intel(R) Xeon(R) Processor"


def test_the_store_round_trip_is_timed_back_to_back_and_after_the_slow_providers_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ping takes 0.1 ms of the fake clock, or 0.4 ms right after a pause: the report gives
    the median of each, and each pause is the slow provider's 50 ms."""
    clock = [0.0]
    pauses: list[float] = []
    woken = [True]

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        woken[0] = False

    def ping() -> None:
        clock[0] += 0.0001 if woken[0] else 0.0004
        woken[0] = True

    monkeypatch.setattr(machine.time, "perf_counter", lambda: clock[0])
    text = machine.round_trips_ms(ping, pause)
    assert text == "0.10 ms back to back, 0.40 ms after 50 ms idle"
    assert pauses == [0.05] * machine.IDLE_PINGS


PYENV_MAPS = (
    "55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1 /root/.pyenv/versions/3.11.7/bin/python3.11\n"
    "7f2a10000000-7f2a10200000 r--p 00000000 08:01 2 "
    "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0\n"
    "7f2a10200000-7f2a10600000 r-xp 00200000 08:01 2 "
    "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0\n"
    "7f2a20000000-7f2a20100000 r-xp 00000000 08:01 3 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
)
STATIC_MAPS = (
    "55d0c0a00000-55d0c0f00000 r-xp 00000000 08:01 1 /usr/bin/python3.11\n"
    "7f2a20000000-7f2a20100000 r-xp 00000000 08:01 3 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
)


def test_the_report_says_which_python_build_ran_the_processes() -> None:
    """An interpreter loading libpython as a shared library, and one with it linked in; what
    the build was configured with is said only where the configuration says it."""
    shared = machine.interpreter("/usr/bin/env", PYENV_MAPS, "'--enable-shared' '--prefix=/x'")
    assert "libpython a shared library (libpython3.11.so.1.0)" in shared
    assert "configured with" not in shared
    linked = machine.interpreter(
        "/usr/bin/env", STATIC_MAPS, "'--enable-optimizations' '--with-lto' '--enable-shared'"
    )
    assert "libpython linked in" in linked
    assert linked.endswith("configured with --enable-optimizations and --with-lto)")
    assert linked.startswith(f"{platform.python_version()} (/usr/bin/env; ")


def test_pythons_speed_is_the_best_of_its_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round of the fixed piece of Python takes what the fake clock says: the report
    gives the fastest, so a round slowed by a neighbour does not count. The cycle collector
    is off while the rounds run, and on again after."""
    took = [0.050, 0.034, 0.090, 0.040, 0.120]
    readings = iter([t for i, d in enumerate(took) for t in (float(i), i + d)])
    collecting: list[bool] = []
    monkeypatch.setattr(machine, "_python_work", lambda: collecting.append(gc.isenabled()))
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(readings))
    assert gc.isenabled()
    assert machine.python_speed_ms() == "34 ms for a fixed piece of pure Python (best of 5)"
    assert collecting == [False] * 5
    assert gc.isenabled()
