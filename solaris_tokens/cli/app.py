"""The `solaris-tokens` command: one Typer sub-app per noun."""

from __future__ import annotations

import typer

from solaris_tokens.cli import audit, db, ledger, renewal, report, requests, users

app = typer.Typer(
    name="solaris-tokens",
    help="Administer solaris-tokens: users, balances, purchase requests, the ledger and reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(users.app, name="users")
app.add_typer(requests.app, name="requests")
app.add_typer(audit.app, name="audit")
app.add_typer(ledger.app, name="ledger")
app.add_typer(db.app, name="db")
app.add_typer(renewal.app, name="renewal")
app.add_typer(report.app, name="report")


def main() -> None:
    app()
