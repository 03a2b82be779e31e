"""`solaris-tokens users ...`: look at a user (balance, statement, usage) and act on them (M1, M2, M5)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from solaris_tokens.admin import (
    AdminService,
    Granted,
    MessageTemplate,
    Overview,
    format_tokens,
    parse_instant,
    percent_used,
)
from solaris_tokens.cli import common
from solaris_tokens.domain import CreditKind, CreditOutcome, UserStatus
from solaris_tokens.ledger.database import as_utc
from solaris_tokens.ledger.purchase_models import PurchaseStatus
from solaris_tokens.ledger.queries import Granularity, LineKind, Statement, UsageBucket, UsageLine
from solaris_tokens.policy import Period
from solaris_tokens.purchases import PurchaseService, PurchaseView, parse_tokens
from solaris_tokens.quota import Account
from solaris_tokens.runtime import Runtime

app = typer.Typer(no_args_is_help=True, help="Users: balances, statements, usage, limits, credits, suspensions.")

EmailArg = Annotated[str, typer.Argument(help="The user's email.")]
TokensArg = Annotated[str, typer.Argument(help="Tokens: a whole number or 100k, 500k, 1M, 2M...")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]
KeyOption = Annotated[
    str | None, typer.Option("--key", help="Idempotency key: repeating a command with the same key credits once.")
]
NotifyOption = Annotated[bool, typer.Option("--notify/--no-notify", help="Email the user about the credit.")]


def _table(title: str, *columns: str) -> Table:
    """A Rich table: '#name' columns are figures (right-aligned, never wrapped), '!name' never wrap,
    the others fold to fit the terminal."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for name in columns:
        if name.startswith("#"):
            table.add_column(name[1:], justify="right", no_wrap=True)
        elif name.startswith("!"):
            table.add_column(name[1:], no_wrap=True)
        else:
            table.add_column(name, overflow="fold")
    return table


def _signed(value: int) -> str:
    return f"{value:+,}".replace(",", ".") if value else "0"


def _admin(runtime: Runtime) -> AdminService:
    return AdminService(runtime.quota, runtime.flusher)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _status(account: Account) -> Text:
    if account.status is UserStatus.SUSPENDED:
        until = f" until {_when(account.suspended_until)} UTC" if account.suspended_until else " (indefinitely)"
        return Text(f"suspended{until}: {account.suspend_reason}", style="bold magenta")
    return Text("active", style="green")


def _row_style(account: Account) -> str:
    """Users near their limit stand out: warning threshold yellow, urgent red, nothing left bold red."""
    if account.available <= 0:
        return "bold red"
    pct = percent_used(account)
    if pct >= account.urgent_percent:
        return "red"
    if pct >= account.warning_percent:
        return "yellow"
    return ""


def _account_json(account: Account) -> dict[str, object]:
    return {**account.as_dict(), "percent": percent_used(account)}


def _print_account(account: Account, *, title: str = "") -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("email", account.email)
    grid.add_row("name", account.name)
    grid.add_row("plan", account.plan)
    grid.add_row("status", _status(account))
    grid.add_row("period", f"{account.period} (next reset {_when(account.next_reset)} UTC)")
    grid.add_row("limit", format_tokens(account.limit))
    grid.add_row("used", f"{format_tokens(account.used)} ({percent_used(account)}%)")
    grid.add_row("reserved", format_tokens(account.reserved))
    grid.add_row("additional", format_tokens(account.additional))
    grid.add_row("available", Text(format_tokens(account.available), style=_row_style(account) or "bold"))
    grid.add_row("requests", format_tokens(account.requests))
    alerts = ", ".join(a.value for a in account.alerts_fired) or "none"
    grid.add_row("alerts", f"{account.warning_percent}% / {account.urgent_percent}% (sent this period: {alerts})")
    if title:
        common.console.print(f"[bold]{title}[/bold]")
    common.console.print(grid)


# --- reading ------------------------------------------------------------------------------------


@app.command("list")
def list_users(
    near_limit: Annotated[
        float | None, typer.Option("--near-limit", help="Only users who used at least this % of their limit.")
    ] = None,
    status: Annotated[UserStatus | None, typer.Option("--status", help="Only users with this status.")] = None,
    plan: Annotated[str | None, typer.Option("--plan", help="Only users on this plan.")] = None,
    json_out: common.JsonOption = False,
) -> None:
    """Every user with used / limit / additional / available / %, the most used first."""

    async def work(runtime: Runtime) -> list[Account]:
        return await _admin(runtime).accounts(plan=plan, status=status, near_limit=near_limit)

    accounts = common.run(work)
    if json_out:
        common.print_json([_account_json(a) for a in accounts])
        return
    table = _table("Users", "email", "plan", "status", "#used", "#limit", "#additional", "#available", "#%")
    for a in accounts:
        table.add_row(
            a.email,
            a.plan,
            a.status.value,
            format_tokens(a.used),
            format_tokens(a.limit),
            format_tokens(a.additional),
            format_tokens(a.available),
            f"{percent_used(a)}",
            style=_row_style(a),
        )
    common.console.print(table)
    typer.echo(f"{len(accounts)} users")


@app.command("overview")
def overview(
    alerts: Annotated[int, typer.Option("--alerts", min=0, help="How many recent alerts to list.")] = 10,
    json_out: common.JsonOption = False,
) -> None:
    """What needs attention: users near or past their limit, recent alerts, pending requests, health."""

    async def work(runtime: Runtime) -> Overview:
        purchases = PurchaseService(runtime.quota)
        try:
            pending = await purchases.count(PurchaseStatus.PENDING)
        except SQLAlchemyError:
            pending = 0  # the database is down: the overview says so below
        return await _admin(runtime).overview(pending_requests=pending, alerts=alerts)

    view = common.run(work)
    if json_out:
        common.print_json(view.as_dict())
        return
    health = ", ".join(
        f"{name} [{'green]up' if ok else 'bold red]DOWN'}[/]"
        for name, ok in (("redis", view.redis_ok), ("database", view.database_ok))
    )
    common.console.print(f"health: {health}")
    typer.echo(
        f"{view.users} users, {view.suspended} suspended, {view.exhausted} with nothing left, "
        f"{view.pending_requests} purchase requests pending"
    )
    if view.near_limit:
        table = _table(
            "Near or past their limit", "email", "plan", "#used", "#limit", "#additional", "#available", "#%"
        )
        for a in view.near_limit:
            table.add_row(
                a.email,
                a.plan,
                format_tokens(a.used),
                format_tokens(a.limit),
                format_tokens(a.additional),
                format_tokens(a.available),
                f"{percent_used(a)}",
                style=_row_style(a),
            )
        common.console.print(table)
    if view.recent_alerts:
        table = _table("Recent alerts (UTC)", "!at", "recipient", "!kind", "!period", "!delivery")
        for alert in view.recent_alerts:
            table.add_row(f"{alert.at:%Y-%m-%d %H:%M}", alert.recipient, alert.kind, alert.period, alert.status)
        common.console.print(table)


@app.command("show")
def show(
    email: EmailArg,
    recent: Annotated[int, typer.Option("--recent", min=0, help="How many recent requests to list.")] = 10,
    json_out: common.JsonOption = False,
) -> None:
    """Profile, balance, period, next reset, alert thresholds, recent requests and open purchase requests."""

    async def work(runtime: Runtime) -> tuple[Account, list[UsageLine], list[PurchaseView]]:
        account, lines = await _admin(runtime).profile(email, recent=recent)
        pending = await PurchaseService(runtime.quota).list_requests(status=PurchaseStatus.PENDING, email=account.email)
        return account, lines, pending

    account, lines, pending = common.run(work)
    if json_out:
        data = _account_json(account)
        created = as_utc(account.created_at)
        data["created_at"] = created.isoformat() if created else None
        data["recent_requests"] = [line.as_dict() for line in lines]
        data["pending_purchase_requests"] = [p.as_dict() for p in pending]
        common.print_json(data)
        return
    _print_account(account)
    if lines:
        table = _table(
            "Recent requests", "#settled at (UTC)", "model", "#prompt", "#completion", "#monthly", "#additional"
        )
        for line in lines:
            table.add_row(
                f"{line.at:%m-%d %H:%M:%S}",
                line.model or "-",
                format_tokens(line.prompt_tokens),
                format_tokens(line.completion_tokens),
                format_tokens(line.monthly),
                format_tokens(line.additional),
            )
        common.console.print(table)
    for p in pending:
        common.console.print(
            f"[yellow]pending purchase request {p.ticket}: {format_tokens(p.tokens)} tokens, urgency {p.urgency}[/]"
        )


@app.command("statement")
def statement(
    email: EmailArg,
    month: Annotated[str | None, typer.Option("--month", help="YYYY-MM (default: the current month).")] = None,
    json_out: common.JsonOption = False,
) -> None:
    """The ledger of a month line by line: debits and credits with running balance, and totals."""

    async def work(runtime: Runtime) -> tuple[Statement, Account]:
        period = Period.parse(month) if month else None
        return await _admin(runtime).statement(email, period)

    st, account = common.run(work)
    current = st.period == account.period
    if json_out:
        data = st.as_dict()
        data["account"] = account.as_dict() if current else None
        common.print_json(data)
        return
    table = _table(f"{st.email} {st.period} (UTC)", "!at", "!kind", "detail", "#tokens", "#balance")
    opening = f"limit {format_tokens(st.opening_limit)}, additional {format_tokens(st.opening_additional)}"
    table.add_row("", "opening", opening, "", format_tokens(st.opening_limit + st.opening_additional))
    for line in st.lines:
        if line.kind is LineKind.USAGE:
            detail = (
                f"{line.model or '-'}: {format_tokens(line.prompt_tokens)} + {format_tokens(line.completion_tokens)}"
                f" (monthly {format_tokens(line.monthly)}, additional {format_tokens(-line.additional)})"
            )
        elif line.kind is LineKind.CREDIT:
            detail = f"{line.credit_kind} by {line.actor}: {line.reason}"
        else:
            detail = f"limit {format_tokens(line.limit - line.tokens)} → {format_tokens(line.limit)} by {line.actor}"
            detail += f": {line.reason}" if line.reason else ""
        table.add_row(
            f"{line.at:%d %H:%M:%S}", line.kind.value, detail, _signed(line.tokens), format_tokens(line.balance)
        )
    common.console.print(table)
    totals = st.totals()
    typer.echo(
        f"totals: {totals['requests']} requests, used {format_tokens(st.used)} of {format_tokens(st.limit)}, "
        f"additional {format_tokens(st.additional)} (credited {format_tokens(st.credited)}, "
        f"spent {format_tokens(st.debited_additional)}), balance {format_tokens(st.balance)}"
    )
    if current:
        typer.echo(
            f"live: used {format_tokens(account.used)}, additional {format_tokens(account.additional)}, "
            f"reserved {format_tokens(account.reserved)}, available {format_tokens(account.available)}"
        )


@app.command("usage")
def usage(
    email: EmailArg,
    by: Annotated[Granularity, typer.Option("--by", help="Bucket size.")] = Granularity.DAY,
    month: Annotated[str | None, typer.Option("--month", help="YYYY-MM (default: the current month).")] = None,
    days: Annotated[int | None, typer.Option("--days", min=1, help="The last N days instead of a month.")] = None,
    json_out: common.JsonOption = False,
) -> None:
    """Requests and tokens per hour or per day: the user's usage pattern over time."""

    async def work(runtime: Runtime) -> tuple[datetime, datetime, list[UsageBucket]]:
        now = runtime.quota.clock()
        if days is not None:
            start, end = by.floor(parse_instant(f"{days}d", now=now, relative_sign=-1)), now
        else:
            period = Period.parse(month) if month else Period.of(now)
            start, end = period.start, period.end
        return start, end, await _admin(runtime).usage(email, by=by, start=start, end=end)

    start, end, buckets = common.run(work)
    if json_out:
        common.print_json(
            {
                "email": email.strip().lower(),
                "by": by.value,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "buckets": [b.as_dict() for b in buckets],
                "total": sum(b.total for b in buckets),
                "requests": sum(b.requests for b in buckets),
            }
        )
        return
    peak = max((b.total for b in buckets), default=0)
    table = _table(f"Usage by {by.value}", f"#{by.value} (UTC)", "#requests", "#tokens", "")
    fmt = "%Y-%m-%d %H:00" if by is Granularity.HOUR else "%Y-%m-%d"
    for b in buckets:
        bar = "█" * max(1, round(30 * b.total / peak)) if peak and b.total else ""
        table.add_row(b.start.strftime(fmt), str(b.requests), format_tokens(b.total), bar)
    common.console.print(table)
    typer.echo(f"{sum(b.requests for b in buckets)} requests, {format_tokens(sum(b.total for b in buckets))} tokens")


# --- acting ---------------------------------------------------------------------------------------


def _done(account: Account, message: str, json_out: bool) -> None:
    if json_out:
        common.print_json(_account_json(account))
    else:
        typer.echo(message)


@app.command("set-limit")
def set_limit(
    email: EmailArg,
    tokens: TokensArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Set the user's monthly limit (overrides the plan's)."""

    async def work(runtime: Runtime) -> Account:
        amount = parse_tokens(tokens)
        return await _admin(runtime).set_limit(email, amount, actor=common.actor_name(actor), reason=reason)

    account = common.run(work)
    _done(account, f"{account.email}: monthly limit {format_tokens(account.limit)}", json_out)


def _grant(
    email: str, tokens: str, kind: CreditKind, reason: str, key: str | None, notify: bool, actor: str | None
) -> Granted:
    async def work(runtime: Runtime) -> Granted:
        amount = parse_tokens(tokens)
        return await _admin(runtime).grant(
            email, amount, kind, reason=reason, actor=common.actor_name(actor), key=key, notify=notify
        )

    return common.run(work)


def _print_granted(granted: Granted, json_out: bool) -> None:
    if json_out:
        common.print_json(granted.as_dict())
        return
    a = granted.account
    if granted.credit.outcome is CreditOutcome.DUPLICATE:
        typer.echo(f"{a.email}: key {granted.key} was already credited; nothing added")
    else:
        typer.echo(
            f"{a.email}: +{format_tokens(granted.credit.amount)} {granted.kind.value} tokens; "
            f"additional {format_tokens(a.additional)}, available {format_tokens(a.available)} (key {granted.key})"
        )


@app.command("add-tokens")
def add_tokens(
    email: EmailArg,
    tokens: TokensArg,
    reason: ReasonOption,
    key: KeyOption = None,
    notify: NotifyOption = True,
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Give bonus tokens: additional tokens that never expire."""
    _print_granted(_grant(email, tokens, CreditKind.BONUS, reason, key, notify, actor), json_out)


@app.command("compensate")
def compensate(
    email: EmailArg,
    tokens: TokensArg,
    reason: ReasonOption,
    key: KeyOption = None,
    notify: NotifyOption = True,
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Credit tokens lost to an incident (X4); use --key (e.g. incident-42:EMAIL) to make a rerun safe."""
    _print_granted(_grant(email, tokens, CreditKind.COMPENSATION, reason, key, notify, actor), json_out)


@app.command("suspend")
def suspend(
    email: EmailArg,
    reason: ReasonOption,
    until: Annotated[
        str | None,
        typer.Option("--until", help="When it lifts by itself: ISO time (UTC unless an offset is given) or 24h, 7d."),
    ] = None,
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Suspend a user now (the next request is refused with the reason); with --until it lifts by itself."""

    async def work(runtime: Runtime) -> Account:
        end = parse_instant(until, now=runtime.quota.clock()) if until else None
        return await _admin(runtime).suspend(email, reason=reason, until=end, actor=common.actor_name(actor))

    account = common.run(work)
    lifts = f"until {_when(account.suspended_until)} UTC" if account.suspended_until else "until resumed"
    _done(account, f"{account.email}: suspended {lifts}", json_out)


@app.command("resume")
def resume(
    email: EmailArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Lift a suspension now."""

    async def work(runtime: Runtime) -> Account:
        return await _admin(runtime).resume(email, actor=common.actor_name(actor), reason=reason)

    account = common.run(work)
    _done(account, f"{account.email}: active", json_out)


@app.command("set-plan")
def set_plan(
    email: EmailArg,
    plan: Annotated[str, typer.Argument(help="A plan of the catalog (basic, power, casual...).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Move a user to another plan (its limit and alert thresholds apply unless overridden)."""

    async def work(runtime: Runtime) -> Account:
        return await _admin(runtime).set_plan(email, plan, actor=common.actor_name(actor), reason=reason)

    account = common.run(work)
    _done(
        account,
        f"{account.email}: plan {account.plan}, limit {format_tokens(account.limit)}, "
        f"alerts {account.warning_percent}%/{account.urgent_percent}%",
        json_out,
    )


@app.command("message")
def message(
    email: EmailArg,
    template: Annotated[MessageTemplate, typer.Option("--template", help="Which message to send.")],
    subject: Annotated[str, typer.Option("--subject", help="Subject (custom template).")] = "",
    text: Annotated[str, typer.Option("--text", help="Text added to the message (required: contact, custom).")] = "",
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key: the same key sends once.")] = None,
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Send the user a templated email (pt-BR), through the outbox."""

    async def work(runtime: Runtime) -> bool:
        return await _admin(runtime).message(
            email, template, actor=common.actor_name(actor), subject=subject, text=text, key=key
        )

    queued = common.run(work)
    if json_out:
        common.print_json({"email": email.strip().lower(), "template": template.value, "queued": queued})
    else:
        typer.echo(f"{template.value} message {'queued' if queued else 'already queued with that key'}")
