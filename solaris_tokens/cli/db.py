"""`solaris-tokens db ...`: schema migrations."""

from __future__ import annotations

import typer

from solaris_tokens.cli import common
from solaris_tokens.ledger.database import make_engine, upgrade

app = typer.Typer(no_args_is_help=True, help="Database schema.")


@app.command("upgrade")
def upgrade_command(revision: str = typer.Argument("heads", help="Target revision.")) -> None:
    """Apply Alembic migrations up to the newest revision."""
    settings = common.settings_factory()
    with common.cli_errors():
        engine = make_engine(settings.resolved_database_url)
        upgrade(engine, revision)
        engine.dispose()
    typer.echo(f"database at {revision}: {engine.url.render_as_string(hide_password=True)}")
