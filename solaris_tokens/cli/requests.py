"""`solaris-tokens requests ...`: purchase requests, from creation to approval or rejection (P2, P3, M3)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from solaris_tokens.admin import format_brl, format_tokens
from solaris_tokens.cli import common
from solaris_tokens.domain import CreditOutcome
from solaris_tokens.ledger.purchase_models import PurchaseStatus, Urgency
from solaris_tokens.purchases import Approval, PurchaseService, PurchaseView, Rejection, parse_tokens
from solaris_tokens.runtime import Runtime

app = typer.Typer(
    no_args_is_help=True, help="Purchase requests for additional tokens: create, review, approve, reject."
)

IdArg = Annotated[int, typer.Argument(help="The request's ticket number (#N).", min=1)]
_URGENCY_STYLE = {Urgency.CRITICA: "bold red", Urgency.ALTA: "red", Urgency.MEDIA: "yellow", Urgency.BAIXA: ""}
_STATUS_STYLE = {PurchaseStatus.PENDING: "yellow", PurchaseStatus.APPROVED: "green", PurchaseStatus.REJECTED: "red"}


def _service(runtime: Runtime) -> PurchaseService:
    return PurchaseService(runtime.quota)


def _print_request(view: PurchaseView) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("ticket", view.ticket)
    grid.add_row("user", f"{view.name} <{view.email}>")
    grid.add_row("tokens", f"{format_tokens(view.tokens)} ({view.quantity.value})")
    grid.add_row("estimated price", format_brl(view.price_cents))
    grid.add_row("urgency", f"[{_URGENCY_STYLE[view.urgency]}]{view.urgency.label}[/]")
    grid.add_row("justification", view.justification)
    grid.add_row("status", f"[{_STATUS_STYLE[view.status]}]{view.status.value}[/]")
    grid.add_row("requested", f"{view.created_at:%Y-%m-%d %H:%M:%S} UTC by {view.requested_by}")
    if view.reviewed_at:
        grid.add_row("reviewed", f"{view.reviewed_at:%Y-%m-%d %H:%M:%S} UTC by {view.reviewer}")
        grid.add_row("reason" if view.status is PurchaseStatus.REJECTED else "note", view.note or "-")
    common.console.print(grid)


@app.command("list")
def list_requests(
    status: Annotated[PurchaseStatus | None, typer.Option("--status", help="Only requests with this status.")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Only this user's requests.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    json_out: common.JsonOption = False,
) -> None:
    """Purchase requests, newest first; with --status pending, the review queue (most urgent first)."""

    async def work(runtime: Runtime) -> list[PurchaseView]:
        return await _service(runtime).list_requests(status=status, email=email, limit=limit)

    views = common.run(work)
    if json_out:
        common.print_json([v.as_dict() for v in views])
        return
    table = Table(title="Purchase requests (UTC)", box=box.SIMPLE_HEAD)
    for name in ("ticket", "created", "tokens", "price"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("user", overflow="fold", min_width=12, ratio=1)
    for name in ("urgency", "status", "reviewer"):
        table.add_column(name, no_wrap=True)
    for v in views:
        table.add_row(
            v.ticket,
            f"{v.created_at:%m-%d %H:%M}",
            format_tokens(v.tokens),
            format_brl(v.price_cents),
            v.email,
            f"[{_URGENCY_STYLE[v.urgency]}]{v.urgency.label}[/]",
            f"[{_STATUS_STYLE[v.status]}]{v.status.value}[/]",
            v.reviewer or "-",
        )
    common.console.print(table)
    typer.echo(f"{len(views)} requests")


@app.command("show")
def show(request_id: IdArg, json_out: common.JsonOption = False) -> None:
    """One request in full, and whether its tokens are in the ledger."""

    async def work(runtime: Runtime) -> tuple[PurchaseView, bool]:
        service = _service(runtime)
        view = await service.get(request_id)
        await runtime.flusher.drain()
        return view, await service.credited(request_id)

    view, credited = common.run(work)
    if json_out:
        common.print_json({**view.as_dict(), "credited": credited})
        return
    _print_request(view)
    typer.echo(f"credited in the ledger: {'yes' if credited else 'no'}")


@app.command("create")
def create(
    email: Annotated[str, typer.Option("--email", help="The user the tokens are for.")],
    tokens: Annotated[str, typer.Option("--tokens", help="100k, 500k, 1M, 2M or a custom whole number.")],
    justification: Annotated[str, typer.Option("--justification", help="Why the user needs them.")],
    urgency: Annotated[str, typer.Option("--urgency", help="baixa, média, alta or crítica.")] = Urgency.MEDIA.value,
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Open a request for a user (support staff acting for them): the user gets the confirmation email."""

    async def work(runtime: Runtime) -> PurchaseView:
        return await _service(runtime).create(
            email, parse_tokens(tokens), justification, urgency, actor=common.actor_name(actor)
        )

    view = common.run(work)
    if json_out:
        common.print_json(view.as_dict())
        return
    typer.echo(
        f"purchase request {view.ticket} created for {view.email}: {format_tokens(view.tokens)} tokens, "
        f"estimated {format_brl(view.price_cents)}, urgency {view.urgency.label}"
    )


@app.command("approve")
def approve(
    request_id: IdArg,
    note: Annotated[str, typer.Option("--note", help="A note kept with the decision.")] = "",
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Approve and credit the tokens at once; approving again never credits twice."""

    async def work(runtime: Runtime) -> Approval:
        return await _service(runtime).approve(request_id, actor=common.actor_name(actor), note=note)

    result = common.run(work)
    if json_out:
        common.print_json(result.as_dict())
        return
    view, account = result.request, result.account
    if result.newly_approved or result.credit is CreditOutcome.CREDITED:
        typer.echo(
            f"purchase request {view.ticket} approved: +{format_tokens(view.tokens)} tokens for {view.email}; "
            f"available now {format_tokens(account.available)}"
        )
    else:
        typer.echo(
            f"purchase request {view.ticket} was already approved by {view.reviewer}; nothing credited again "
            f"(available {format_tokens(account.available)})"
        )


@app.command("reject")
def reject(
    request_id: IdArg,
    reason: Annotated[str, typer.Option("--reason", help="Sent to the user by email.")],
    actor: common.ActorOption = None,
    json_out: common.JsonOption = False,
) -> None:
    """Reject a request; the user receives the reason by email and nothing is credited."""

    async def work(runtime: Runtime) -> Rejection:
        return await _service(runtime).reject(request_id, actor=common.actor_name(actor), reason=reason)

    result = common.run(work)
    if json_out:
        common.print_json(result.as_dict())
        return
    view = result.request
    if result.newly_rejected:
        typer.echo(f"purchase request {view.ticket} rejected: {view.note}")
    else:
        typer.echo(f"purchase request {view.ticket} was already rejected by {view.reviewer}: {view.note}")
