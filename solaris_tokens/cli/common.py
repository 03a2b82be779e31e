"""What every CLI command shares: settings, the actor, running core work, errors and output."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from sqlalchemy.exc import InterfaceError, OperationalError

from solaris_tokens.clock import Clock, utc_now
from solaris_tokens.errors import SolarisError
from solaris_tokens.runtime import Runtime, run_sync
from solaris_tokens.settings import Settings

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ActorOption = Annotated[
    str | None, typer.Option("--actor", help="Who is acting, for the audit log (default: the OS user).")
]

# Tests replace these to run commands against their own backends and clock.
settings_factory: Callable[[], Settings] = Settings
clock: Clock = utc_now


def actor_name(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return os.environ.get("SOLARIS_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run core work; a SolarisError becomes a clear message and exit code 1."""
    with cli_errors():
        return run_sync(work, settings_factory(), clock=clock)


@contextmanager
def cli_errors() -> Iterator[None]:
    try:
        yield
    except SolarisError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except (OperationalError, InterfaceError) as exc:
        err_console.print(f"[red]error:[/red] the ledger database is unreachable: {exc.orig or exc}")
        raise typer.Exit(1) from exc


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str))


def fmt_tokens(value: int) -> str:
    """Brazilian thousands separator, as the spec writes figures (1.000.000)."""
    return f"{value:,}".replace(",", ".")
