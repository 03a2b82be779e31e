"""Brazilian formatting of the figures emails show (the spec writes 1.000.000 and R$ 25,00).

Pure functions, registered as Jinja2 filters by the renderer; no locale is installed or needed.
"""

from __future__ import annotations

from datetime import UTC, datetime


def tokens(value: int) -> str:
    """`1000000` → `1.000.000`: dots between thousands, never decimals (tokens are integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"token figures are integers, got {value!r}")
    return f"{value:,}".replace(",", ".")


def brl(centavos: int) -> str:
    """`2500` centavos → `R$ 25,00` (money is integer centavos, never a float)."""
    if isinstance(centavos, bool) or not isinstance(centavos, int):
        raise TypeError(f"money is integer centavos, got {centavos!r}")
    sign = "-" if centavos < 0 else ""
    reais, cents = divmod(abs(centavos), 100)
    return f"{sign}R$ {tokens(reais)},{cents:02d}"


def percent(value: int | float) -> str:
    """`85` → `85%`, `85.5` → `85,5%` (one decimal at most, comma as the decimal mark)."""
    if isinstance(value, int):
        return f"{value}%"
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return text.replace(".", ",") + "%"


def _utc(moment: datetime | str) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamps shown in emails must be timezone-aware")
    return moment.astimezone(UTC)


def date_br(moment: datetime | str) -> str:
    """`2024-02-01T00:00:00Z` → `01/02/2024` (day first, as Brazilians read dates), in UTC."""
    return _utc(moment).strftime("%d/%m/%Y")


def datetime_br(moment: datetime | str) -> str:
    """`2024-02-01T00:00:00Z` → `01/02/2024 às 00:00 UTC`; periods and resets are UTC instants."""
    return _utc(moment).strftime("%d/%m/%Y às %H:%M UTC")


_MONTHS = (
    "janeiro",
    "fevereiro",
    "março",
    "abril",
    "maio",
    "junho",
    "julho",
    "agosto",
    "setembro",
    "outubro",
    "novembro",
    "dezembro",
)


def month_br(period: str) -> str:
    """`2024-02` → `fevereiro de 2024`."""
    year, month = period.split("-", 1)
    return f"{_MONTHS[int(month) - 1]} de {int(year)}"
