"""`solaris-tokens audit ...`: the append-only record of who did what (M6)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from solaris_tokens.admin import AdminService, parse_instant
from solaris_tokens.cli import common
from solaris_tokens.ledger.queries import AuditView
from solaris_tokens.runtime import Runtime

app = typer.Typer(no_args_is_help=True, help="The audit log: every admin action with before/after values.")


def _change(before: Any, after: Any) -> str:
    """What an action changed, compactly: `key: old → new` for each key (JSON when not a mapping)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return " → ".join(p for p in (_compact(before), _compact(after)) if p)
    parts = []
    for key in sorted(before.keys() | after.keys()):
        if key in before and key in after:
            if before[key] != after[key]:
                parts.append(f"{key}: {_compact(before[key]) or '∅'} → {_compact(after[key]) or '∅'}")
        elif key in after:
            parts.append(f"{key}: {_compact(after[key])}")
        else:
            parts.append(f"{key}: {_compact(before[key])} → ∅")
    return "; ".join(parts)


def _compact(value: Any) -> str:
    if value in (None, ""):
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@app.command("list")
def list_entries(
    email: Annotated[str | None, typer.Option("--email", help="Only actions on this user.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only actions by this admin.")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action, or a prefix such as 'purchase.'.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO date/time (UTC unless an offset is given), or 24h, 7d...")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 100,
    json_out: common.JsonOption = False,
) -> None:
    """Audit entries, newest first."""

    async def work(runtime: Runtime) -> list[AuditView]:
        start = parse_instant(since, now=runtime.quota.clock(), relative_sign=-1) if since else None
        return await AdminService(runtime.quota).audit_log(
            email=email, actor=actor, action=action, since=start, limit=limit
        )

    entries = common.run(work)
    if json_out:
        common.print_json([e.as_dict() for e in entries])
        return
    table = Table(title="Audit log (UTC)", box=box.SIMPLE_HEAD)
    table.add_column("at", no_wrap=True)
    table.add_column("actor", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("target", overflow="fold")
    table.add_column("change", overflow="fold", ratio=2)
    table.add_column("reason", overflow="fold", ratio=1)
    for e in entries:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M}", e.actor, e.action, e.target, _change(e.before, e.after), e.reason)
    common.console.print(table)
    typer.echo(f"{len(entries)} entries")
