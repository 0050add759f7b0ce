"""Fixtures shared by the flow tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from tests.smtp_servers import Mailbox, smtp_server
from tests.test_mail import send_through


@pytest.fixture
def mailbox(app: Flask) -> Iterator[Mailbox]:
    """A real SMTP server on 127.0.0.1 that the app's mail goes to."""
    box = Mailbox()
    with smtp_server(box) as port:
        send_through(app, port)
        yield box
