"""`solaris-tokens ledger ...`: flush, rebuild and reconcile counters against the ledger (X3)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from solaris_tokens.cli import common
from solaris_tokens.quota import Drift
from solaris_tokens.runtime import Runtime

app = typer.Typer(no_args_is_help=True, help="The durable ledger and the Redis counters built from it.")

EmailsArg = Annotated[list[str] | None, typer.Argument(help="Users to act on (default: every user).")]


async def _emails(runtime: Runtime, emails: list[str] | None) -> list[str]:
    return list(emails) if emails else list(runtime.ledger.all_emails())


@app.command("flush")
def flush(json_out: common.JsonOption = False) -> None:
    """Write every settled entry waiting in Redis to the ledger now."""

    async def work(runtime: Runtime) -> int:
        return await runtime.flusher.drain()

    written = common.run(work)
    if json_out:
        common.print_json({"written": written})
    else:
        typer.echo(f"{written} ledger entries written")


@app.command("rebuild")
def rebuild(emails: EmailsArg = None, json_out: common.JsonOption = False) -> None:
    """Set (never add) each user's Redis counters from the ledger plus entries not yet written."""

    async def work(runtime: Runtime) -> list[str]:
        await runtime.flusher.drain()
        done = []
        for email in await _emails(runtime, emails):
            await runtime.quota.rebuild(email)
            done.append(email)
        return done

    rebuilt = common.run(work)
    if json_out:
        common.print_json({"rebuilt": rebuilt})
    else:
        typer.echo(f"{len(rebuilt)} users rebuilt from the ledger")


@app.command("reconcile")
def reconcile(
    emails: EmailsArg = None,
    fix: Annotated[bool, typer.Option("--fix", help="Rebuild the users that drifted.")] = False,
    json_out: common.JsonOption = False,
) -> None:
    """Report where Redis counters differ from the ledger (exit 2 when any drift remains)."""

    async def work(runtime: Runtime) -> tuple[int, list[Drift]]:
        checked, drifted = 0, []
        for email in await _emails(runtime, emails):
            checked += 1
            drift = await runtime.quota.reconcile(email)
            if not drift.zero:
                drifted.append(drift)
                if fix:
                    await runtime.quota.rebuild(email)
        return checked, drifted

    checked, drifted = common.run(work)
    if json_out:
        common.print_json({"checked": checked, "drifted": [asdict(d) for d in drifted], "fixed": fix})
    else:
        table = Table("email", "used", "additional", "requests", "limit", title="Drift (Redis − ledger)")
        for d in drifted:
            table.add_row(d.email, str(d.used), str(d.additional), str(d.requests), str(d.limit))
        if drifted:
            common.console.print(table)
        typer.echo(f"{checked} users checked, {len(drifted)} with drift{' (fixed)' if fix and drifted else ''}")
    if drifted and not fix:
        raise typer.Exit(2)
