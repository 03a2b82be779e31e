"""Fixtures of the email tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notify.helpers import SmtpServer


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free port, recording what it accepts.

    Parametrize indirectly with (user, password) to make it require AUTH.
    """
    server = SmtpServer(getattr(request, "param", None))
    server.start()
    yield server
    server.stop()
