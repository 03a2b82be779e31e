"""Pure helpers of the purchase and admin modules: quantities, urgency, prices, instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from solaris_tokens.admin import format_brl, format_tokens, normalize_email, parse_instant
from solaris_tokens.errors import InvalidInput
from solaris_tokens.purchases import Quantity, Urgency, estimate_price_cents, parse_tokens, parse_urgency

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("100k", 100_000),
        ("500K", 500_000),
        ("1M", 1_000_000),
        ("2m", 2_000_000),
        ("1,5M", 1_500_000),
        ("1.5M", 1_500_000),
        ("2.5k", 2_500),
        ("500.000", 500_000),
        ("1.000.000", 1_000_000),
        ("500_000", 500_000),
        ("500,000", 500_000),
        ("750000", 750_000),
        (" 42 ", 42),
    ],
)
def test_parse_tokens_accepts_what_people_type(text: str, tokens: int) -> None:
    assert parse_tokens(text) == tokens


@pytest.mark.parametrize("text", ["", "1.5", "1,5", "0.0001k", "-5", "1e6", "meio milhão", "5 M tokens", "1.00.000"])
def test_parse_tokens_refuses_the_rest(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_tokens(text)


def test_quantity_presets_of_the_form() -> None:
    assert [Quantity.of(t) for t in (100_000, 500_000, 1_000_000, 2_000_000, 750_000)] == [
        Quantity.K100,
        Quantity.K500,
        Quantity.M1,
        Quantity.M2,
        Quantity.CUSTOM,
    ]


def test_urgency_with_or_without_accents() -> None:
    assert [parse_urgency(w) for w in ("baixa", "MÉDIA", "media", "Alta", "crítica", "critica")] == [
        Urgency.BAIXA,
        Urgency.MEDIA,
        Urgency.MEDIA,
        Urgency.ALTA,
        Urgency.CRITICA,
        Urgency.CRITICA,
    ]
    assert [u.label for u in Urgency] == ["Baixa", "Média", "Alta", "Crítica"]
    assert Urgency.CRITICA.rank > Urgency.ALTA.rank > Urgency.MEDIA.rank > Urgency.BAIXA.rank
    with pytest.raises(InvalidInput, match="urgency must be one of"):
        parse_urgency("urgentíssima")


def test_estimated_price_in_integer_centavos() -> None:
    assert estimate_price_cents(500_000, 5) == 2500  # the spec: 500.000 tokens = R$ 25,00
    assert format_brl(estimate_price_cents(500_000, 5)) == "R$ 25,00"
    assert estimate_price_cents(100_000, 5) == 500
    assert estimate_price_cents(2_000_000, 5) == 10_000
    assert estimate_price_cents(150, 5) == 1  # 0,75 centavo rounds half up to 1
    assert estimate_price_cents(99, 5) == 0
    assert estimate_price_cents(30_000_000, 5) == 150_000
    assert format_brl(150_000) == "R$ 1.500,00"
    assert format_tokens(1_000_000) == "1.000.000"


def test_parse_instant_iso_and_durations() -> None:
    assert parse_instant("2026-11-20T18:00:00Z", now=NOW) == datetime(2026, 11, 20, 18, tzinfo=UTC)
    assert parse_instant("2026-11-20T15:00:00-03:00", now=NOW) == datetime(2026, 11, 20, 18, tzinfo=UTC)
    assert parse_instant("2026-11-20", now=NOW) == datetime(2026, 11, 20, tzinfo=UTC)
    assert parse_instant("24h", now=NOW) == NOW + timedelta(hours=24)
    assert parse_instant("7d", now=NOW, relative_sign=-1) == NOW - timedelta(days=7)
    assert parse_instant("2w", now=NOW) == NOW + timedelta(weeks=2)
    assert parse_instant("30m", now=NOW) == NOW + timedelta(minutes=30)
    with pytest.raises(InvalidInput):
        parse_instant("amanhã", now=NOW)


def test_normalize_email() -> None:
    assert normalize_email("  Maria.Silva@Empresa.com.BR ") == "maria.silva@empresa.com.br"
    for bad in ("maria", "ma ria@x.com", "a" * 250 + "@x.com"):
        with pytest.raises(InvalidInput):
            normalize_email(bad)
