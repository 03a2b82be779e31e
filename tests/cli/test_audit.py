"""`audit list` (SPEC M6, M7): every admin action with who, what, when, before/after, reason."""

from __future__ import annotations

from datetime import timedelta

from tests.cli.conftest import Cli, Helpers
from tests.support import FakeClock

MARIA = "maria.silva@empresa.com.br"
JOAO = "joao@empresa.com.br"


def test_audit_list_filters_by_user_actor_action_and_time(cli: Cli, helpers: Helpers, clock: FakeClock) -> None:
    helpers.use(MARIA, 10, 10)
    helpers.use(JOAO, 10, 10)
    clock.advance(days=1)
    cli("users", "set-limit", MARIA, "2M", "--actor", "ana", "--reason", "projeto")
    clock.advance(days=1)
    cli("users", "add-tokens", JOAO, "5k", "--actor", "bruno", "--reason", "bônus")
    clock.advance(hours=1)
    cli("users", "suspend", JOAO, "--reason", "análise", "--actor", "ana")

    everything = cli.json("audit", "list")
    assert [e["action"] for e in everything] == [
        "user.suspend",
        "tokens.bonus",
        "user.set_limit",
        "user.created",
        "user.created",
    ]  # newest first
    assert {e["target"] for e in everything} == {MARIA, JOAO}
    assert all(e["at"].endswith("+00:00") for e in everything)

    assert [e["action"] for e in cli.json("audit", "list", "--email", JOAO)] == [
        "user.suspend",
        "tokens.bonus",
        "user.created",
    ]
    assert [e["target"] for e in cli.json("audit", "list", "--actor", "ana")] == [JOAO, MARIA]
    assert [e["action"] for e in cli.json("audit", "list", "--action", "user.")] == [
        "user.suspend",
        "user.set_limit",
        "user.created",
        "user.created",
    ]
    assert [e["action"] for e in cli.json("audit", "list", "--since", "2h")] == ["user.suspend", "tokens.bonus"]
    since = (clock.now - timedelta(days=1, hours=2)).isoformat()
    assert len(cli.json("audit", "list", "--since", since)) == 3
    assert len(cli.json("audit", "list", "--limit", "1")) == 1
    assert "not a date/time" in cli("audit", "list", "--since", "ontem", code=1).output

    human = cli("audit", "list", "--actor", "bruno").stdout
    assert "tokens.bonus" in human and "1 entries" in human
