"""Who is calling (SPEC F1): the user's email from a trusted header, the key's owner, or the `user` field.

Pure logic, no LiteLLM import: the proxy adapter turns LiteLLM's key object into a `CallerKey`.
Sources, in order:

1. the identity header (default `X-User-Email`, which LibreChat fills with the logged-in user's
   email) — only when the request's key is trusted (the master key, or an alias/hash listed in
   settings); from any other key the header is ignored, so a key holder cannot impersonate;
2. the email of the key's owner (a LiteLLM virtual key created for a user);
3. the OpenAI `user` field, when it looks like an email (LibreChat and others often send an
   opaque id there, which is simply not an identity).

A source that is present but not a valid address is refused rather than skipped: a caller that
names someone must name them correctly.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from solaris_tokens.errors import InvalidIdentity
from solaris_tokens.settings import Settings

MAX_EMAIL_LENGTH = 254
_MAX_LOCAL_LENGTH = 64
_MAX_LABEL_LENGTH = 63
_LOCAL_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")
# Categories never legitimate in an address: controls, format characters (zero-width joiners,
# direction marks), surrogates, private use, unassigned, and every kind of space.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# Scripts that are legitimately written together (Unicode TS #39, "highly restrictive").
_SCRIPT_MIXES = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "BOPOMOFO"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)
_CACHE_SIZE = 8192


class IdentitySource(StrEnum):
    HEADER = "header"
    KEY = "key"
    USER_FIELD = "user_field"


class IdentityProblem(StrEnum):
    MISSING = "missing"  # no source named anyone
    INVALID = "invalid"  # a source named something that is not an acceptable address


class UnidentifiedCaller(InvalidIdentity):
    """No usable email: the proxy answers 401 and nothing is created or debited."""

    def __init__(self, problem: IdentityProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CallerKey:
    """What the proxy knows about the API key of one request."""

    hashed: str = ""  # LiteLLM's `api_key`: the key's sha256, or the master key's fixed alias
    alias: str = ""
    owner_email: str = ""
    is_master: bool = False


@dataclass(frozen=True, slots=True)
class Identity:
    email: str
    source: IdentitySource


class IdentityResolver:
    def __init__(self, settings: Settings) -> None:
        self.header = settings.identity_header.strip().lower()
        self.trusted_aliases = frozenset(a.strip() for a in settings.trusted_key_aliases if a.strip())
        self.trusted_hashes = frozenset(h.strip().lower() for h in settings.trusted_key_hashes if h.strip())

    def trusts(self, key: CallerKey) -> bool:
        """Only trusted keys may name the user in the identity header."""
        return (
            key.is_master
            or (bool(key.alias) and key.alias in self.trusted_aliases)
            or (bool(key.hashed) and key.hashed.lower() in self.trusted_hashes)
        )

    def resolve(self, *, headers: Mapping[str, object], key: CallerKey, user_field: object = None) -> Identity:
        """The caller's normalized email, or UnidentifiedCaller."""
        if self.trusts(key):
            value = header_value(headers, self.header)
            if value:
                return Identity(normalize_email(value), IdentitySource.HEADER)
        if key.owner_email:
            return Identity(normalize_email(key.owner_email), IdentitySource.KEY)
        if isinstance(user_field, str) and "@" in user_field:
            return Identity(normalize_email(user_field), IdentitySource.USER_FIELD)
        raise UnidentifiedCaller(IdentityProblem.MISSING, "the request names no user email")


def header_value(headers: Mapping[str, object], name: str) -> str:
    """A header's value by case-insensitive name ('' when absent or not text)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == lowered), None)
    if not isinstance(value, str):
        return ""
    if not value.isascii():
        # ASGI servers decode header bytes as latin-1; an internationalized address arrives as
        # UTF-8 bytes (RFC 6532), so read it back as such when it is valid UTF-8.
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            value = value.encode("latin-1").decode("utf-8")
    return value.strip()


def normalize_email(raw: str) -> str:
    """Trim, NFKC, lowercase and validate an address; UnidentifiedCaller(INVALID) when unacceptable."""
    if not isinstance(raw, str):
        raise UnidentifiedCaller(IdentityProblem.INVALID, "the email is not text")
    if len(raw) > 4 * MAX_EMAIL_LENGTH:  # refuse before doing any Unicode work on huge input
        raise UnidentifiedCaller(IdentityProblem.INVALID, "the email is too long")
    return _normalize(raw)


@lru_cache(maxsize=_CACHE_SIZE)
def _normalize(raw: str) -> str:
    email = unicodedata.normalize("NFKC", raw.strip()).lower()
    problem = _problem(email)
    if problem:
        raise UnidentifiedCaller(IdentityProblem.INVALID, problem)
    return email


def _problem(email: str) -> str:
    """Why `email` (already normalized) is not acceptable, or '' when it is."""
    if not email:
        return "the email is empty"
    if len(email) > MAX_EMAIL_LENGTH:
        return f"the email is longer than {MAX_EMAIL_LENGTH} characters"
    for ch in email:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            return f"the email contains a control, invisible or space character (U+{ord(ch):04X})"
    if email.count("@") != 1:
        return "the email must contain exactly one @"
    local, domain = email.split("@")
    return _local_problem(local) or _domain_problem(domain)


def _local_problem(local: str) -> str:
    if not local or len(local) > _MAX_LOCAL_LENGTH:
        return f"the part before @ must have 1 to {_MAX_LOCAL_LENGTH} characters"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the part before @ has a misplaced dot"
    for ch in local:
        if ch != "." and ch not in _LOCAL_SPECIALS and not _word_char(ch):
            return f"the part before @ contains {ch!r}"
    return _script_problem(local)


def _domain_problem(domain: str) -> str:
    labels = domain.split(".")
    if len(labels) < 2:
        return "the domain needs at least one dot"
    if len(domain) > MAX_EMAIL_LENGTH - 2:
        return "the domain is too long"
    for label in labels:
        if not label or len(label) > _MAX_LABEL_LENGTH:
            return f"every domain label must have 1 to {_MAX_LABEL_LENGTH} characters"
        if label.startswith("-") or label.endswith("-"):
            return "a domain label starts or ends with a hyphen"
        for ch in label:
            if ch != "-" and not _word_char(ch):
                return f"the domain contains {ch!r}"
        problem = _script_problem(label)
        if problem:
            return problem
    if labels[-1].isdigit():
        return "the top-level domain cannot be numeric"
    return ""


def _word_char(ch: str) -> bool:
    """Letters and digits of any script, plus combining marks."""
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def _script_problem(part: str) -> str:
    """Refuse lookalike tricks: letters of unrelated scripts mixed in one label (e.g. Cyrillic а in 'pаypal')."""
    if part.isascii():
        return ""
    scripts = {_script(ch) for ch in part if ch.isalpha()}
    if len(scripts) <= 1 or any(scripts <= mix for mix in _SCRIPT_MIXES):
        return ""
    return "the email mixes letters of different scripts: " + ", ".join(sorted(scripts)).lower()


def _script(ch: str) -> str:
    """The script of a letter, from its Unicode name (first word: LATIN, CYRILLIC, GREEK, CJK...)."""
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
