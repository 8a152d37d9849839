"""Command line: ``python -m airflow_provider_ctxcache.emulator`` / ``ctxcache-emulator``.

Binds 127.0.0.1 by default and refuses any non-loopback host unless ``--allow-remote`` is
given (the emulator has no real authentication). Without ``--allow-remote`` it also answers only
requests whose ``Host`` header is a loopback name (against DNS rebinding; see :mod:`.guard`).
When it is ready to serve, it prints exactly one line to stdout,
``ctxcache-emulator listening on http://HOST:PORT`` with the real port (``--port 0`` picks a
free one), which :class:`~.process.EmulatorProcess` waits for.
SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from collections.abc import Iterator, Sequence

import uvicorn

from .app import create_app

DEFAULT_PORT = 8765
READY_PREFIX = "ctxcache-emulator listening on "


def _min_tokens(value: str) -> tuple[str, int]:
    model, sep, count = value.partition("=")
    if not sep or not model or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected MODEL=N, got {value!r}")
    return model.removeprefix("models/"), int(count)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The CLI options."""
    parser = argparse.ArgumentParser(
        prog="ctxcache-emulator", description="A local server speaking the Gemini REST API (both backends)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback address and answer requests whatever their Host header",
    )
    parser.add_argument("--api-key", default=None, help="require this Developer-API key (default: any key)")
    parser.add_argument(
        "--min-tokens",
        type=_min_tokens,
        action="append",
        default=[],
        metavar="MODEL=N",
        help="override a model's minimum cache size on every backend serving it; "
        "an unknown model is added (repeatable)",
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    return parser.parse_args(argv)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    """uvicorn's server, minus its signal capture: it re-raises SIGTERM on exit (status -15).

    :func:`_serve` installs handlers that stop the server gracefully and exit 0 instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _stop(server: uvicorn.Server) -> None:
    if server.should_exit:
        server.force_exit = True
    server.should_exit = True


async def _serve(server: uvicorn.Server, host: str) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, server)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"{READY_PREFIX}http://{shown_host}:{port}", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT."""
    args = parse_args(argv)
    if not is_loopback(args.host) and not args.allow_remote:
        print(
            f"ctxcache-emulator: refusing to bind non-loopback host {args.host!r}; "
            "pass --allow-remote to expose the emulator beyond this machine",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    app = create_app(api_key=args.api_key, min_tokens=dict(args.min_tokens), allow_remote=args.allow_remote)
    config = uvicorn.Config(
        app,
        # "localhost" may resolve to two addresses that would get two different free ports.
        host="127.0.0.1" if args.host == "localhost" else args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        lifespan="off",
        date_header=False,  # the app sends Date on its own clock
        # Requests held by injected latency do not hold up a stop: they end with the server.
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    try:
        asyncio.run(_serve(server, args.host))
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
