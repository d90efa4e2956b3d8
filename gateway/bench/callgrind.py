"""Where a callgrind dump's instructions went: the self cost of each function, summed by the
shared object it is in (the interpreter, libc, each extension module), per request.

    python -m gateway.bench.callgrind cg.out.1234.1 --requests 823

A dump of the gateway under `valgrind --tool=callgrind` (docs/performance.md, "Profiling")
holds every C function's own instructions and each call's inclusive cost. Summed by shared
object, the self costs say how much of a request is Python code being interpreted and how
much each C library does. Only the first event (`Ir`, instructions) is read.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# `fn=(12) name` names function 12; a later `fn=(12)` refers to it. Objects (`ob`, `cob`),
# files (`fl`, `fi`, `fe`, `cfi`, `cfl`) and functions (`fn`, `cfn`) are numbered apart.
_SPEC = re.compile(r"^(c?)(ob|fl|fi|fe|fn)=(?:\((\d+)\))?\s*(.*)$")
_SPACE = {"ob": "ob", "fl": "fl", "fi": "fl", "fe": "fl", "fn": "fn"}


@dataclass(frozen=True, slots=True)
class Profile:
    total: int  # the dump's `summary:` line (else the self costs' sum)
    by_function: Counter[tuple[str, str]]  # (shared object, function) -> self instructions

    def by_object(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (obj, _), cost in self.by_function.items():
            out[obj] += cost
        return out


def parse(lines: Iterable[str]) -> Profile:
    names: dict[tuple[str, str], str] = {}
    obj = fn = "???"
    after_call = False
    summary = 0
    costs: Counter[tuple[str, str]] = Counter()
    for raw in lines:
        line = raw.rstrip("\n")
        if not line:
            continue
        spec = _SPEC.match(line)
        if spec:
            called, kind, number, name = spec.groups()
            space = _SPACE[kind]
            if number is None:  # an uncompressed name
                value = name
            elif name:
                value = names[(space, number)] = name
            else:
                value = names.get((space, number), f"({number})")
            if not called and kind == "ob":
                obj = value
            elif not called and kind == "fn":
                fn = value
            continue
        if line.startswith("calls="):
            after_call = True  # the next cost line is the call's inclusive cost
            continue
        if line.startswith("summary:"):  # the figure docs/performance.md divides
            summary = int(line.split()[1])
            continue
        head = line[0]
        if head.isdigit() or head in "+-*":
            fields = line.split()
            if after_call:
                after_call = False
            elif len(fields) > 1:
                costs[(obj, fn)] += int(fields[1])
    return Profile(total=summary or sum(costs.values()), by_function=costs)


def _short(obj: str) -> str:
    return obj.rsplit("/", 1)[-1]


def render(profile: Profile, requests: int, top: int) -> str:
    counted = sum(profile.by_function.values()) or 1
    per = max(requests, 1)
    out = [
        f"{profile.total:,} instructions, {profile.total // per:,} per request "
        f"over {per:,} requests",
        "",
        "| Shared object | Share | Per request |",
        "|---|---|---|",
    ]
    for obj, cost in profile.by_object().most_common():
        if cost * 1000 < counted:  # under 0.1 %
            continue
        out.append(f"| {_short(obj)} | {cost / counted:.1%} | {cost // per:,} |")
    out += ["", "| Function | Shared object | Share | Per request |", "|---|---|---|---|"]
    for (obj, fn), cost in profile.by_function.most_common(top):
        out.append(f"| `{fn}` | {_short(obj)} | {cost / counted:.1%} | {cost // per:,} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.callgrind", description=__doc__)
    parser.add_argument("dump", type=Path, help="a callgrind.out file")
    parser.add_argument("--requests", type=int, default=1, help="requests the dump covers")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    args = parser.parse_args(argv)
    try:
        with args.dump.open(encoding="utf-8", errors="replace") as f:
            profile = parse(f)
    except OSError as exc:
        print(f"cannot read {args.dump}: {exc.strerror}", file=sys.stderr)
        return 2
    print(render(profile, args.requests, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
