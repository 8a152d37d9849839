"""Command line: ``ctxcache COMMAND`` (or ``python -m airflow_provider_ctxcache COMMAND``).

Each subcommand registers its own parser and a ``run`` function returning the exit status, so a
new one is one more ``_add_*`` call. Exit status: 0 when everything asked for was done; 1 when
an operation failed (a cache missing or not deleted, an API or metadata-database error); 2 for
bad input (an argument, a cache name, a connection that is missing or invalid). A failure is
one line on stderr, ``ctxcache COMMAND: error: MESSAGE``, never a traceback: the message names
the field or the call and the fix.

- ``advise``: would an explicit cache pay (prices only, calls nothing).
- ``caches list|delete|gc``: the live caches of a connection, through ``ContextCacheHook``; gc
  follows :mod:`.janitor` with run states from Airflow's metadata database, so run it where the
  ``airflow`` command runs.
- ``emulator``: the local Gemini API server (``ctxcache-emulator``'s options).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_ctxcache.costs.advise import advise
from airflow_provider_ctxcache.exceptions import CtxCacheConfigError

if TYPE_CHECKING:
    from google.genai import types

    from airflow_provider_ctxcache.hooks import ContextCacheHook
    from airflow_provider_ctxcache.janitor import Sweep

PROG = "ctxcache"
OK = 0
FAILED = 1  # some operation failed: a cache missing or not deleted, an API or database error
USAGE_ERROR = 2  # argparse's own status for bad arguments
DEFAULT_CONN_ID = "ctxcache_default"  # ContextCacheHook.default_conn_name, without importing the SDK here

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


class OperationFailed(Exception):
    """A call that was well asked but failed (API, network, metadata database): exit 1."""


# -- caches ----------------------------------------------------------------------------------------


def _hook(args: argparse.Namespace) -> ContextCacheHook:
    """The connection's hook, its connection read now so a missing one is named before any call."""
    # As `airflow connections get` does: connections in the metadata database are found too,
    # not only those in the environment and the secrets backends.
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    from airflow.sdk.exceptions import AirflowNotFoundException

    from airflow_provider_ctxcache.hooks import ContextCacheHook

    conn_id = args.conn_id
    hook = ContextCacheHook(conn_id)
    try:
        hook.settings  # noqa: B018  (reads and checks the connection)
    except AirflowNotFoundException:
        raise CtxCacheConfigError(
            f"--conn-id: connection {conn_id!r} is not defined (looked in the environment, the secrets "
            f"backend and Airflow's metadata database). Add it with `airflow connections add {conn_id} "
            "--conn-type ctxcache --conn-password API_KEY` (extras: backend, project, location, base_url), "
            f"or set AIRFLOW_CONN_{conn_id.upper()}, or name another with --conn-id."
        ) from None
    return hook


def _logs_to_stderr(args: argparse.Namespace) -> logging.Logger:
    """Airflow logs to stdout, where they would break the table or the JSON: send them to stderr,
    warnings only unless --verbose."""
    from airflow.sdk.log import configure_logging

    configure_logging(log_level="INFO" if args.verbose else "WARNING", output=sys.stderr)
    return logging.getLogger("airflow_provider_ctxcache.cli")


def _time_left(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; the last one (often long) is not padded."""
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers) - 1)]
    return "\n".join(
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        ).rstrip()
        for row in cells
    )


def cache_row(cache: types.CachedContent, now: dt.datetime) -> dict[str, Any]:
    """What ``caches list`` shows of a cache, the run that made it included."""
    from airflow_provider_ctxcache.cache_owner import owner_of
    from airflow_provider_ctxcache.model_facts import model_id

    owner = owner_of(cache.display_name)
    expire = cache.expire_time
    return {
        "name": cache.name,
        "display_name": cache.display_name,
        "model": model_id(cache.model or ""),
        "tokens": cache.usage_metadata.total_token_count if cache.usage_metadata else None,
        "create_time": cache.create_time.isoformat() if cache.create_time else None,
        "expire_time": expire.isoformat() if expire else None,
        "seconds_left": max(int((expire - now).total_seconds()), 0) if expire else None,
        "key_kind": owner.kind if owner else None,
        "dag_id": owner.dag_id if owner else None,
        "run_id": owner.run_id if owner else None,
    }


def _run_list(args: argparse.Namespace) -> int:
    """Every live cache of the connection, soonest to expire first."""
    _logs_to_stderr(args)
    hook = _hook(args)
    now = dt.datetime.now(dt.timezone.utc)
    rows = sorted((cache_row(c, now) for c in _call(hook, hook.list_caches)), key=_expiry)
    if args.json:
        print(json.dumps(rows, indent=2))
        return OK
    if not rows:
        print(f"No live caches on connection {args.conn_id!r}.")
        return OK
    headers = ("NAME", "MODEL", "TOKENS", "EXPIRES (UTC)", "LEFT", "DAG", "RUN", "DISPLAY NAME")
    print(
        _table(
            headers,
            [
                (
                    r["name"],
                    r["model"],
                    f"{r['tokens']:,}" if r["tokens"] is not None else None,
                    _utc(r["expire_time"]),
                    _time_left(r["seconds_left"]),
                    r["dag_id"],
                    r["run_id"],
                    r["display_name"],
                )
                for r in rows
            ],
        )
    )
    tokens = sum(r["tokens"] or 0 for r in rows)
    print(
        f"{len(rows)} live cache(s), {tokens:,} tokens, billed for storage until they expire or are deleted."
    )
    return OK


def _expiry(row: dict[str, Any]) -> str:
    return str(row["expire_time"] or "")


def _utc(iso: str | None) -> str | None:
    if iso is None:
        return None
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _call(hook: ContextCacheHook, call: Callable[[], Any]) -> Any:
    """An API call whose failure (a named API error, the network) exits 1 with one line."""
    try:
        return call()
    except CtxCacheConfigError:
        raise
    except Exception as error:
        raise OperationFailed(hook.scrub(f"{type(error).__name__}: {error}")) from None


def _run_delete(args: argparse.Namespace) -> int:
    """Delete the named caches (and files staged for them); exit 1 if any was missing or failed."""
    from airflow_provider_ctxcache.operators.delete_cache import delete_with_staged

    log = _logs_to_stderr(args)
    hook = _hook(args)
    names = [hook.cache_name(name, "NAME") for name in args.names]  # all checked before any delete
    results = []
    for name in names:
        result: dict[str, Any] = {"name": name, "status": "deleted", "staged_removed": 0, "error": None}
        try:
            removal, result["staged_removed"] = delete_with_staged(hook, name, log)
            if not removal.deleted:
                result["status"] = "not_found"
                result["error"] = "no such cache: it expired, was deleted, or these credentials cannot see it"
        except CtxCacheConfigError:
            raise
        except Exception as error:
            result["status"] = "failed"
            result["error"] = hook.scrub(f"{type(error).__name__}: {error}")
        results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            staged = f" and {r['staged_removed']} staged file(s)" if r["staged_removed"] else ""
            if r["status"] == "deleted":
                print(f"deleted {r['name']}{staged}")
            else:
                print(f"{PROG} caches delete: {r['name']}: {r['error']}", file=sys.stderr)
    return OK if all(r["status"] == "deleted" for r in results) else FAILED


def _metadata_run_state(dag_id: str, run_id: str) -> str | None:
    from airflow_provider_ctxcache.janitor import metadata_run_state

    try:
        return metadata_run_state(dag_id, run_id)
    except Exception as error:
        detail = str(error).split("[SQL:")[0].strip()[:200]
        raise OperationFailed(
            f"cannot read the state of run {dag_id}/{run_id} from Airflow's metadata database "
            f"({type(error).__name__}: {' '.join(detail.split())}). Run this where `airflow` commands "
            "work (the same AIRFLOW_HOME and [database] sql_alchemy_conn); nothing was deleted."
        ) from None


def _run_gc(args: argparse.Namespace) -> int:
    """Decide per :mod:`.janitor`; list (dry run, the default) or delete; exit 1 if a delete failed."""
    from airflow_provider_ctxcache.janitor import decide, sweep
    from airflow_provider_ctxcache.validation import parse_ttl

    older_than = parse_ttl(args.older_than, "--older-than") if args.older_than is not None else None
    log = _logs_to_stderr(args)
    hook = _hook(args)
    caches = _call(hook, hook.list_caches)
    decisions = decide(caches, _metadata_run_state, older_than=older_than)
    done = sweep(hook, decisions, dry_run=not args.delete, log=log)
    if args.json:
        print(json.dumps(done.to_dict(), indent=2))
    else:
        print(_gc_text(done, args.conn_id))
    return FAILED if done.failed else OK


def _gc_text(done: Sweep, conn_id: str) -> str:
    if not done.decisions:
        return f"No live caches on connection {conn_id!r}."
    rows = []
    for d in done.decisions:
        if d.verdict == "keep":
            action, reason = "keep", d.reason
        elif done.dry_run:
            action, reason = "would delete", d.reason
        elif d.name in done.failed:
            action, reason = "FAILED", f"{d.reason}; {done.failed[d.name]}"
        elif d.name in done.gone:
            action, reason = "gone", f"{d.reason}; it was already gone"
        else:
            action, reason = "deleted", d.reason
        rows.append((action, d.name, reason))
    table = _table(("ACTION", "NAME", "REASON"), rows)
    if done.dry_run:
        count = len(done.to_delete)
        head = (
            f"Dry run: nothing was deleted. Run again with --delete to delete the {count} cache(s) "
            "marked 'would delete'."
            if count
            else "Dry run: nothing to delete."
        )
        return f"{head}\n{table}\n{count} to delete, {done.kept} kept."
    gone, failed = len(done.gone), len(done.failed)
    return f"{table}\n{len(done.deleted)} deleted, {gone} already gone, {failed} failed, {done.kept} kept."


def _add_caches(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "caches",
        help="list, delete and garbage-collect the live caches of a connection",
        description="The live caches of a ctxcache connection, which bill storage until they expire "
        "or are deleted. Reads the connection as Airflow does (environment, secrets backend, "
        "metadata database).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--conn-id",
        default=DEFAULT_CONN_ID,
        help=f"Airflow connection of type ctxcache (default {DEFAULT_CONN_ID})",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common.add_argument(
        "-v", "--verbose", action="store_true", help="log each call on stderr (default: warnings only)"
    )

    listing = actions.add_parser(
        "list",
        parents=[common],
        help="every live cache, with the DAG run that made it",
        description="Every live cache: name, model, tokens, expiry and time left, and the DAG and run "
        "that made it when its display name carries them.",
    )
    listing.set_defaults(run=_run_list, name="caches list")

    delete = actions.add_parser(
        "delete",
        parents=[common],
        help="delete caches by name",
        description="Delete each named cache and the files the provider staged for it. A cache that "
        "is already gone is reported; the exit status is 1 if any was missing or failed.",
        epilog="example: ctxcache caches delete cachedContents/abc123 cachedContents/def456",
    )
    delete.add_argument("names", nargs="+", metavar="NAME", help="cachedContents/ID or the full name")
    delete.set_defaults(run=_run_delete, name="caches delete")

    gc = actions.add_parser(
        "gc",
        parents=[common],
        help="delete leftover caches of finished or vanished runs (a dry run unless --delete)",
        description="Find the caches this provider made whose DAG run has finished (success or failed) "
        "or no longer exists, and with --older-than any of its caches older than that. Caches of "
        "runs still queued or running are kept, content-reuse caches (shared across runs) are kept "
        "unless too old, and caches the provider did not make are never touched. Without --delete "
        "it only lists what it would delete and why. Run states come from Airflow's metadata "
        "database: run it where the airflow command runs.",
        epilog="example: ctxcache caches gc --older-than 1d --delete",
    )
    gc.add_argument(
        "--older-than",
        metavar="DURATION",
        default=None,
        help="also delete any provider cache made longer ago than this: 90m, 12h, 2d",
    )
    gc.add_argument("--delete", action="store_true", help="delete them (default: a dry run)")
    gc.set_defaults(run=_run_gc, name="caches gc")


def _add_emulator(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Only for `ctxcache --help`: main() hands everything after "emulator" to the emulator's own parser.
    commands.add_parser(
        "emulator",
        help="run the local Gemini API emulator (ctxcache emulator --help for its options)",
        add_help=False,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``ctxcache`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Gemini context caching tools for Airflow.",
        epilog="exit status: 0 done, 1 an operation failed, 2 bad input",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_advise(commands)
    _add_caches(commands)
    _add_emulator(commands)
    return parser


def _fail(args: argparse.Namespace, exc: Exception, status: int) -> int:
    message = " ".join(str(exc).splitlines())
    print(f"{PROG} {getattr(args, 'name', args.command)}: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit status (0 done, 1 an operation failed, 2 bad input)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["emulator"]:
        from airflow_provider_ctxcache.emulator.__main__ import main as run_emulator

        return run_emulator(arguments[1:])
    args = build_parser().parse_args(arguments)
    run: Runner = args.run
    try:
        return run(args)
    except CtxCacheConfigError as exc:
        return _fail(args, exc, USAGE_ERROR)
    except OperationFailed as exc:
        return _fail(args, exc, FAILED)


if __name__ == "__main__":
    sys.exit(main())
