"""Command line: ``ctxcache COMMAND`` (or ``python -m airflow_provider_ctxcache.cli COMMAND``).

Each subcommand registers its own parser and a ``run`` function returning the exit status, so a
new one (e.g. a janitor) is one more ``_add_*`` call. Bad input exits 2 with one line on stderr,
``ctxcache COMMAND: error: MESSAGE``, never a traceback: the message already names the field and
the fix.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from airflow_provider_ctxcache.costs.advise import advise
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

PROG = "ctxcache"
USAGE_ERROR = 2  # argparse's own status for bad arguments

Runner = Callable[[argparse.Namespace], int]


def _whole(text: str, field: str, flag: str) -> int:
    """A count typed on the command line; a bad one fails like the library's own checks."""
    try:
        return int(text)
    except ValueError:
        raise CtxCacheConfigError(f"{field}: {text!r} is not a whole number; give e.g. {flag} 40.") from None


def _run_advise(args: argparse.Namespace) -> int:
    """Price an explicit cache against the baselines, spending nothing; exit 0 whatever the verdict."""
    advice = advise(
        model=args.model,
        context_tokens=_whole(args.context_tokens, "context_tokens", "--context-tokens"),
        requests=_whole(args.requests, "requests", "--requests"),
        ttl=args.ttl,
        prompt_tokens=_whole(args.prompt_tokens, "prompt_tokens", "--prompt-tokens"),
        output_tokens=_whole(args.output_tokens, "output_tokens", "--output-tokens"),
        prices=args.prices,
        include_creation=not args.no_creation,
    )
    print(json.dumps(advice.to_dict(), indent=2) if args.json else advice.table())
    return 0


def _add_advise(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "advise",
        help="whether an explicit cache would pay, and from how many requests",
        description="Price an explicit cache against online and batch calls without one, and give "
        "the break-even request count for each. Calls nothing and spends nothing.",
        epilog="example: ctxcache advise --model gemini-2.5-pro --context-tokens 300000 "
        "--requests 40 --ttl 2h",
    )
    parser.add_argument("--model", required=True, help="model id, e.g. gemini-2.5-flash")
    parser.add_argument("--context-tokens", required=True, metavar="N", help="the cache's size in tokens")
    parser.add_argument(
        "--requests", required=True, metavar="N", help="how many requests would use the cache"
    )
    parser.add_argument(
        "--ttl", default="1h", help="how long the cache is stored: 2h, 90m, 3600s (default 1h)"
    )
    parser.add_argument("--prompt-tokens", default="0", metavar="N", help="uncached tokens each request adds")
    parser.add_argument(
        "--output-tokens", default="0", metavar="N", help="output tokens per request, thinking included"
    )
    parser.add_argument(
        "--prices",
        default=None,
        metavar="JSON",
        help='price overrides, as the connection extra "prices": {"input_per_million": 0.3, ...} '
        'or {"MODEL": {...}}; a model the table lacks needs all four base fields',
    )
    parser.add_argument(
        "--no-creation", action="store_true", help="the cache already exists: do not charge its creation"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.set_defaults(run=_run_advise)


def build_parser() -> argparse.ArgumentParser:
    """The ``ctxcache`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="Gemini context caching tools for Airflow.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_advise(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit status, or 2 with one error line for bad input."""
    args = build_parser().parse_args(argv)
    run: Runner = args.run
    try:
        return run(args)
    except CtxCacheConfigError as exc:
        message = " ".join(str(exc).splitlines())
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
