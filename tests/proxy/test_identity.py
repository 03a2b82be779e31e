"""Who is calling (SPEC F1): sources in order, trust, normalization and validation."""

from __future__ import annotations

import pytest

from solaris_tokens.identity import (
    CallerKey,
    IdentityProblem,
    IdentityResolver,
    IdentitySource,
    UnidentifiedCaller,
    normalize_email,
)
from solaris_tokens.settings import Settings

MASTER = CallerKey(hashed="litellm_proxy_master_key", is_master=True)
UNTRUSTED = CallerKey(hashed="ab" * 32, alias="other-app")
OWNED = CallerKey(hashed="cd" * 32, alias="maria-key", owner_email="Maria.Silva@Example.com")


@pytest.fixture
def resolver() -> IdentityResolver:
    return IdentityResolver(Settings(trusted_key_aliases=["librechat"], trusted_key_hashes=["EF" * 32]))


def test_trusted_key_header_names_the_user(resolver: IdentityResolver) -> None:
    identity = resolver.resolve(headers={"x-user-email": "  Maria.Silva@Example.COM "}, key=MASTER)
    assert identity.email == "maria.silva@example.com"
    assert identity.source is IdentitySource.HEADER


def test_utf8_header_bytes_decoded_as_latin1_are_read_back() -> None:
    resolver = IdentityResolver(Settings())
    as_received = "josé@exemplo.com.br".encode().decode("latin-1")  # what Starlette hands over
    assert resolver.resolve(headers={"x-user-email": as_received}, key=MASTER).email == "josé@exemplo.com.br"


def test_header_name_is_case_insensitive_and_configurable() -> None:
    resolver = IdentityResolver(Settings(identity_header="X-LibreChat-User"))
    identity = resolver.resolve(headers={"X-LIBRECHAT-USER": "joao@example.com"}, key=MASTER)
    assert identity.email == "joao@example.com"


@pytest.mark.parametrize(
    "key",
    [
        CallerKey(hashed="12" * 32, alias="librechat"),
        CallerKey(hashed="ef" * 32),  # listed in upper case: hashes compare case-insensitively
    ],
)
def test_aliases_and_hashes_listed_in_settings_are_trusted(resolver: IdentityResolver, key: CallerKey) -> None:
    assert resolver.trusts(key)
    assert resolver.resolve(headers={"x-user-email": "ana@example.com"}, key=key).email == "ana@example.com"


def test_header_from_untrusted_key_is_ignored(resolver: IdentityResolver) -> None:
    with pytest.raises(UnidentifiedCaller) as caught:
        resolver.resolve(headers={"x-user-email": "victim@example.com"}, key=UNTRUSTED)
    assert caught.value.problem is IdentityProblem.MISSING


def test_untrusted_key_with_owner_is_its_owner_whatever_the_header_says(resolver: IdentityResolver) -> None:
    identity = resolver.resolve(headers={"x-user-email": "victim@example.com"}, key=OWNED, user_field="x@y.com")
    assert (identity.email, identity.source) == ("maria.silva@example.com", IdentitySource.KEY)


def test_trusted_key_without_header_falls_back_to_owner_then_user_field(resolver: IdentityResolver) -> None:
    owned_master = CallerKey(hashed="litellm_proxy_master_key", is_master=True, owner_email="admin@example.com")
    assert resolver.resolve(headers={}, key=owned_master).email == "admin@example.com"
    identity = resolver.resolve(headers={}, key=MASTER, user_field="Joao@Example.com")
    assert (identity.email, identity.source) == ("joao@example.com", IdentitySource.USER_FIELD)


def test_user_field_that_is_not_an_email_is_not_an_identity(resolver: IdentityResolver) -> None:
    # LibreChat sends its own user id there.
    with pytest.raises(UnidentifiedCaller) as caught:
        resolver.resolve(headers={}, key=UNTRUSTED, user_field="65a1f0c2e4b0a1b2c3d4e5f6")
    assert caught.value.problem is IdentityProblem.MISSING


def test_a_source_that_names_an_invalid_address_is_refused_not_skipped(resolver: IdentityResolver) -> None:
    with pytest.raises(UnidentifiedCaller) as caught:
        resolver.resolve(headers={"x-user-email": "not-an-email"}, key=MASTER)
    assert caught.value.problem is IdentityProblem.INVALID


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Maria.Silva@Example.com", "maria.silva@example.com"),
        ("\tjoao+ia@empresa.com.br\n", "joao+ia@empresa.com.br"),
        ("ｍａｒｉａ＠ｅｘａｍｐｌｅ．ｃｏｍ", "maria@example.com"),  # fullwidth forms fold (NFKC)
        ("josé.conceição@exemplo.com.br", "josé.conceição@exemplo.com.br"),
        ("иван@пример.рф", "иван@пример.рф"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
        ("山田太郎@例え.jp", "山田太郎@例え.jp"),
    ],
)
def test_valid_addresses_are_normalized(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "maria",
        "maria@",
        "@example.com",
        "maria@@example.com",
        "maria@example",
        "maria@example.123",
        ".maria@example.com",
        "maria.@example.com",
        "ma..ria@example.com",
        "maria silva@example.com",
        "maria@exam ple.com",
        "maria@-example.com",
        "maria@example-.com",
        "maria@example..com",
        "maria@[127.0.0.1]",
        '"maria"@example.com',
        "maria(comment)@example.com",
        "maria@example.com\r\nBcc: x@y.com",
        "maria\x00@example.com",
        "ma\u200bria@example.com",  # zero-width space
        "maria@exa\u202emple.com",  # right-to-left override
        "maria@pаypal.com",  # Cyrillic а inside a Latin label
        "mаria@example.com",  # Cyrillic а inside a Latin local part
        "a" * 65 + "@example.com",
        "a@" + ("b" * 63 + ".") * 4 + "com",  # longer than 254
        "maria@exa_mple.com",
    ],
)
def test_invalid_addresses_are_refused(raw: str) -> None:
    with pytest.raises(UnidentifiedCaller) as caught:
        normalize_email(raw)
    assert caught.value.problem is IdentityProblem.INVALID


def test_length_limit_is_254_characters() -> None:
    local = "a" * 64
    domain = ".".join(["b" * 63, "c" * 63, "d" * 57, "com"])
    email = f"{local}@{domain}"
    assert len(email) == 254
    assert normalize_email(email) == email
    with pytest.raises(UnidentifiedCaller):
        normalize_email(f"{local}@{domain}x")


def test_non_text_is_refused() -> None:
    with pytest.raises(UnidentifiedCaller):
        normalize_email(42)  # type: ignore[arg-type]
