"""Debian packages some tests need (prometheus, chromium): installed on demand, as root.

Without root and outside CI the test is skipped with the reason; in CI (CI=true or
REQUIRE_REDIS=1) a package that cannot be installed fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest

APT_TIMEOUT_S = 900


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("REQUIRE_REDIS") == "1"


def _give_up(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def require_binary(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` first when it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0:
        _give_up(f"{binary} is missing and only root can `apt-get install {package}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *lock, "update", "-q"],
        ["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", package],
    ):
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _give_up(f"{' '.join(command)} failed: {exc}")
        if done.returncode != 0:
            _give_up(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    found = shutil.which(binary)
    if not found:
        _give_up(f"`apt-get install {package}` did not provide {binary}")
    return found
