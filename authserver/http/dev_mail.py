"""``/dev/mail``: the e-mail a development server "sent" (development without
``AUTHSERVER_SMTP_URL``, where messages go to the console instead of an SMTP server).

Not found in production, nor once an SMTP server is configured: then mail goes where it is
addressed, and its bodies (reset links, later) must be readable only by their recipients.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, make_response, render_template

from authserver.db import db
from authserver.runtime import runtime
from authserver.services.mail import MailComposer, mailbox_entry, recent_mail

bp = Blueprint("dev_mail", __name__)


def _development_composer() -> MailComposer:
    rt = runtime()
    if rt.config.is_production or rt.config.smtp_url or rt.mail is None:
        abort(404)
    return rt.mail


@bp.get("/dev/mail")
def mailbox() -> str:
    composer = _development_composer()
    return render_template(
        "dev_mail.html", messages=recent_mail(db.session, composer), product=composer.product_name
    )


@bp.get("/dev/mail/<int:message_id>/html")
def html_part(message_id: int) -> Response:
    """One message's HTML part, as a mail client would show it: its own document, with its
    inline styles and nothing that runs."""
    entry = mailbox_entry(db.session, _development_composer(), message_id)
    if entry is None:
        abort(404)
    response = make_response(entry.html)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "frame-ancestors 'none'; base-uri 'none'; sandbox"
    )
    return response
