"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer
from tests.smtp_servers import Mailbox, smtp_server
from tests.test_mail import send_through


@pytest.fixture
def mailbox(live_server: LiveServer) -> Iterator[Mailbox]:
    """A real SMTP server on 127.0.0.1 that the live server's mail goes to."""
    box = Mailbox()
    with smtp_server(box) as port:
        send_through(live_server.app, port)
        yield box
