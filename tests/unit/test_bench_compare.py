"""Comparing two versions side by side: phases, pair order, the summary, where each starts."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import cast

import pytest

from gateway.bench.compare import (
    NAMES,
    Comparison,
    Sample,
    Spec,
    interpreters,
    main,
    markdown,
    order,
    package_root,
    parse_phases,
    summary,
)
from gateway.bench.procs import BenchError, Proc


def test_phases_read_kind_connections_and_latency() -> None:
    assert parse_phases("hit:64, miss:16:50, stream:16:50, long:16") == [
        Spec("hit", 64, 0),
        Spec("miss", 16, 50),
        Spec("stream", 16, 50),
        Spec("long", 16, 0),
    ]
    assert Spec("miss", 16, 50).name == "miss:16:50"


@pytest.mark.parametrize("text", ["burst:16", "hit", "hit:0", "miss:16:-1", "miss:x", "hit:1:2:3"])
def test_a_phase_it_cannot_read_is_named_in_the_error(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        parse_phases(text)


def test_pairs_alternate_which_version_goes_first() -> None:
    assert [order(p) for p in range(4)] == [
        ("base", "this"),
        ("this", "base"),
        ("base", "this"),
        ("this", "base"),
    ]


def test_summary_gives_medians_and_the_median_of_each_pairs_ratio() -> None:
    base = [Sample(200, 1000, 10, 40), Sample(300, 900, 12, 50), Sample(250, 950, 11, 45)]
    this = [Sample(180, 1100, 9, 30), Sample(330, 850, 13, 60), Sample(200, 1000, 10, 44)]
    row = summary(Spec("hit", 64), {"base": base, "this": this})
    # Pairs: 0.9, 1.1, 0.8. The ratio of the medians (200/250 = 0.8) would differ.
    assert (row.ratio, row.low, row.high, row.pairs) == (0.9, 0.8, 1.1, 3)
    assert row.base == {"cpu_us": 250, "rps": 950, "p50_ms": 11, "p99_ms": 45}
    assert row.this["cpu_us"] == 200
    table = markdown([row], Path("/src/old"))
    assert "| hit:64:0 | 3 | 250 | 200 | 0.900 | 0.80 to 1.10 | 11.00 | 10.00 | 2 of 3 |" in table


def test_the_other_version_must_hold_a_gateway_package(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no gateway/ package"):
        package_root(tmp_path)
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "cli.py").write_text("")
    assert package_root(tmp_path) == tmp_path.resolve()


def test_bad_options_are_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--base", str(tmp_path), "--phases", "hit:64,burst:3"])
    assert exit_.value.code == 2
    assert "'burst:3'" in capsys.readouterr().err
    assert main(["--base", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no gateway/ package" in capsys.readouterr().err


def test_the_base_may_run_on_another_interpreter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--base-python`: the same code on two interpreters, each gateway started by its own,
    and the table says which ran the base. One that is not there is refused at once."""
    run = Comparison.__new__(Comparison)
    run.pythons = interpreters("/opt/other/bin/python")
    assert run.gateway_argv("base", "g.yaml", 8001)[0] == "/opt/other/bin/python"
    assert run.gateway_argv("this", "g.yaml", 8002) == [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--config",
        "g.yaml",
        "--port",
        "8002",
    ]
    assert interpreters(None) == {"base": sys.executable, "this": sys.executable}
    row = summary(Spec("hit", 64), {name: [Sample(200, 1000, 10, 40)] for name in NAMES})
    table = markdown([row], Path("/src"), "/opt/other/bin/python")
    assert table.startswith("This version against `/src` run by `/opt/other/bin/python`: ")
    with pytest.raises(SystemExit) as exit_:
        main(["--base", ".", "--base-python", str(tmp_path / "python")])
    assert exit_.value.code == 2
    assert "not an executable" in capsys.readouterr().err


def test_a_process_starts_where_it_is_told(tmp_path: Path) -> None:
    """Each version starts outside both checkouts: `python -m` imports from its directory."""
    log = tmp_path / "p.log"
    argv = [sys.executable, "-c", "import os, sys; sys.stderr.write(os.getcwd())"]
    proc = Proc("p", argv, None, log)
    proc.cwd = tmp_path
    proc.start()
    deadline = time.monotonic() + 10
    while not log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.stop()
    assert log.read_text() == str(tmp_path)


class _Gateway:
    """A started gateway as `measure` sees it: its CPU ticks, and which start it came from."""

    def __init__(self, start: int) -> None:
        self.start, self.ticked, self.stopped = start, 0, False

    def stop(self) -> None:
        self.stopped = True

    def ticks(self) -> int:
        self.ticked += 3
        return self.ticked


class _Run(Comparison):
    """A comparison whose gateways are counted instead of started, and whose load is noted."""

    def __init__(self, fresh: bool) -> None:
        self.fresh, self.measured = fresh, False
        self.gateways: dict[str, _Gateway] = {}
        self.started: list[_Gateway] = []
        self.ran: list[tuple[str, int]] = []  # (version, the start its gateway came from)

    def start_gateways(self) -> None:
        start = len(self.started) // 2 + 1
        self.gateways = {name: _Gateway(start) for name in NAMES}
        self.procs = cast(dict[str, Proc], self.gateways)  # what `measure` reads and stops
        self.started += self.gateways.values()
        self.measured = False

    def _run(self, name: str, spec: Spec, seconds: float) -> tuple[int, int, Sample]:
        self.ran.append((name, self.gateways[name].start))
        return 100, 0, Sample(0.0, 100.0, 1.0, 2.0)


@pytest.mark.parametrize("fresh", [True, False])
def test_each_pair_runs_on_gateways_started_for_it_unless_told_otherwise(fresh: bool) -> None:
    run = _Run(fresh)
    run.start_gateways()
    for spec in (Spec("hit", 64), Spec("miss", 16)):
        samples = run.measure(spec, pairs=3, seconds=1.0)
        assert [len(samples[name]) for name in NAMES] == [3, 3]
    starts = [start for _, start in run.ran]
    if fresh:  # both versions of a pair from one start, a new start for every pair
        assert starts == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
        assert [g.stopped for g in run.started] == [True] * 10 + [False] * 2  # the last run on
    else:
        assert starts == [1] * 12
    assert [name for name, _ in run.ran[:4]] == ["base", "this", "this", "base"]
