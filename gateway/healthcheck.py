"""`gateway healthcheck`: exit 0 when the gateway answers 200, else 1 (a container HEALTHCHECK)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080/readyz"


def check(url: str = DEFAULT_URL, timeout_s: float = 3.0) -> int:
    """One GET, no retries, no proxies from the environment: the probe asks this container."""
    if not url.startswith(("http://", "https://")):
        print(f"unhealthy: not an http(s) URL: {url}", file=sys.stderr)
        return 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0
