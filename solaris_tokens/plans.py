"""The plan catalog (SPEC C1): defaults a user's own settings override."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from solaris_tokens.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    monthly_limit: int
    warning_percent: int
    urgent_percent: int
    automatic_purchase: bool = False

    def __post_init__(self) -> None:
        if self.monthly_limit < 0:
            raise InvalidInput(f"plan {self.name}: monthly_limit must be >= 0")
        if not 0 < self.warning_percent < self.urgent_percent <= 100:
            raise InvalidInput(f"plan {self.name}: need 0 < warning < urgent <= 100")


DEFAULT_PLANS: dict[str, Plan] = {
    "basic": Plan("basic", 1_000_000, 80, 95),
    "power": Plan("power", 3_000_000, 90, 98, automatic_purchase=True),
    "casual": Plan("casual", 1_000_000, 80, 95),
}


def load_plans(path: Path | None) -> dict[str, Plan]:
    """The default catalog, with plans from a TOML file added or replaced.

    The file holds one table per plan::

        [plans.power]
        monthly_limit = 5000000
        warning_percent = 90
        urgent_percent = 98
        automatic_purchase = true
    """
    plans = dict(DEFAULT_PLANS)
    if path is None:
        return plans
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    for name, fields in data.get("plans", {}).items():
        base = plans.get(name)
        try:
            plans[name] = Plan(
                name=name,
                monthly_limit=int(fields.get("monthly_limit", base.monthly_limit if base else 1_000_000)),
                warning_percent=int(fields.get("warning_percent", base.warning_percent if base else 80)),
                urgent_percent=int(fields.get("urgent_percent", base.urgent_percent if base else 95)),
                automatic_purchase=bool(fields.get("automatic_purchase", base.automatic_purchase if base else False)),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"plan {name} in {path}: {exc}") from exc
    return plans
