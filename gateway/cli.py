"""The `gateway` command: parses arguments and delegates; nothing else lives here."""

from __future__ import annotations

import argparse
import errno
import re
import signal
import socket
import sys
from collections.abc import Callable, Sequence

from gateway.config import NAME_PATTERN, ConfigError, load_config
from gateway.healthcheck import DEFAULT_URL, check


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="An LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", required=True, help="path to the YAML config")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--port", type=_port, help="overrides server.port")
    serve.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes on the port (overrides server.workers)",
    )
    # Set by the supervisor on the workers it starts; not for people.
    serve.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)

    health = sub.add_parser("healthcheck", help="exit 0 if the gateway answers 200, else 1")
    health.add_argument("--url", default=DEFAULT_URL, help=f"default: {DEFAULT_URL}")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")

    check = sub.add_parser("check-config", help="validate a config file without serving")
    check.add_argument("path")

    hk = sub.add_parser("hash-key", help="make a new gateway key and its config line")
    hk.add_argument("key", nargs="?", help="hash this key instead of making a new one")
    hk.add_argument("--name", type=_name, default="my-app", help="the key's name in the config")

    mock = sub.add_parser("mock-provider", help="serve the fake OpenAI + Anthropic provider")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=_port, default=9090)
    mock.add_argument("--api-key", help="require this provider key")

    demo = sub.add_parser("demo", help="the mock provider and a gateway, ready to try")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=_port, default=8080)
    demo.add_argument("--mock-port", type=_port, default=9090)

    ev = sub.add_parser("eval", help="compare two prompts over a test set")
    from gateway.eval.cli import add_arguments

    add_arguments(ev)
    return parser


def positive_int(text: str) -> int:
    """A whole number of 1 or more, in ASCII digits."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of 1 or more, not {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, not {text!r}")
    return int(text)


def _name(text: str) -> str:
    """A name the config accepts: a key named otherwise would be refused when it is loaded."""
    if re.fullmatch(NAME_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: letters, digits, '_', '.' and '-', starting with a letter or digit, "
            "at most 64 characters"
        )
    return text


# The commands that listen on ports of their own choosing, and the options that choose them.
# (`serve` says why it cannot listen in its log line.)
_LISTENERS = {"demo": "--port and --mock-port", "mock-provider": "--port"}
_CANNOT_BIND = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.command not in _LISTENERS:
            raise
        if isinstance(exc, socket.gaierror):  # --host names no address of this machine
            print(
                f"gateway {args.command}: cannot listen on {args.host!r}: {exc.strerror}.",
                file=sys.stderr,
            )
            return 1
        if exc.errno not in _CANNOT_BIND:
            raise
        print(
            f"gateway {args.command}: cannot listen: {exc.strerror}. "
            f"Stop what holds the port, or choose another with {_LISTENERS[args.command]}.",
            file=sys.stderr,
        )
        return 1


def hold_reloads() -> Callable[[], bool]:
    """Until the server takes SIGHUP over, a SIGHUP is kept for it; the answer says whether
    one came. Its default action ends the process: a reload asked while the gateway started
    (by a config manager, or the supervisor passing one on to a worker it just started)
    killed it."""
    held: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: held.append(signum))
    return lambda: bool(held)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        held = hold_reloads()  # first: starting takes a second, and the file is read in it
        from gateway.reload import ConfigSource
        from gateway.serve import serve

        source = ConfigSource(args.config, args.host, args.port, args.workers, args.supervised)
        source.reload_held = held
        return serve(source, load_config(args.config))
    elif args.command == "healthcheck":
        return check(args.url, args.timeout)
    elif args.command == "check-config":
        from gateway.sites import check_listen

        config = load_config(args.path)
        check_listen(config, args.path)
        print(f"{args.path}: ok ({len(config.routes)} routes, {len(config.keys)} keys)")
    elif args.command == "hash-key":
        _hash_key(args.key, args.name)
    elif args.command == "mock-provider":
        from gateway.mock import run_mock

        run_mock(args.host, args.port, args.api_key)
    elif args.command == "demo":
        from gateway.demo import demo

        demo(args.host, args.port, args.mock_port)
    elif args.command == "eval":
        from gateway.eval.cli import run

        return run(args)
    return 0


def _hash_key(key: str | None, name: str) -> None:
    from gateway.serve import hash_key, new_key

    if key is None:
        key, digest = new_key()
        print(f"key: {key}")
        print("Give the key to the application; only its hash goes in the config.\n")
    else:
        digest = hash_key(key)
    print(f'  - name: {name}\n    key_sha256: "{digest}"\n    routes: ["*"]')


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
