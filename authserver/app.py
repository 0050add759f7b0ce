"""The application factory: the one place where the parts are wired together."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from authserver.config import Config, ConfigError
from authserver.db import db
from authserver.errors import commit_or_answer_unavailable, register_error_handlers
from authserver.http import (
    account_api,
    admin_api,
    admin_console,
    authorize,
    client_registration,
    dev_mail,
    device,
    email_links,
    health,
    oidc,
    openapi,
    pages,
    passkeys,
    recovery,
    signup,
    two_step,
)
from authserver.http import oauth as oauth_views
from authserver.http import wellknown as wellknown_views
from authserver.http.branding import init_branding
from authserver.http.cors import init_cors
from authserver.http.jwks_document import JwksResponder
from authserver.http.locale import init_locale
from authserver.http.metadata_document import MetadataResponder
from authserver.http.rate_limits import init_rate_limits
from authserver.http.web import csrf, init_web
from authserver.oauth.server import AuthorizationServer
from authserver.runtime import attach_runtime, build_runtime
from authserver.services.outbox_sender import wake_after_commit

# Exit status for a configuration the server refuses. 3 is what gunicorn reads as "worker
# failed to boot", so gunicorn stops instead of restarting workers forever.
EXIT_CONFIG_ERROR = 3

# Token requests are a few hundred bytes; nothing this server accepts needs more.
MAX_REQUEST_BYTES = 64 * 1024


def load_config_or_exit() -> Config:
    """Read the environment; on problems print one line each and stop the process."""
    try:
        return Config.from_env()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"authserver: configuration error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # authlib logs issued tokens at DEBUG; never let those lines out, whatever the level.
    logging.getLogger("authlib").setLevel(logging.WARNING)
    # alembic announces its plugins at INFO on every command; a CLI error must stay one line.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Security events are one JSON object per line, nothing around it, for log shippers.
    audit_log = logging.getLogger("authserver.audit")
    if not audit_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit_log.addHandler(handler)
        audit_log.propagate = False
        audit_log.setLevel(logging.INFO)


def create_app(config: Config | None = None) -> Flask:
    if config is None:
        config = load_config_or_exit()
    configure_logging(config.log_level)
    if config.is_sqlite:
        Path(config.instance_dir).mkdir(parents=True, exist_ok=True)

    app = Flask(__name__, instance_path=str(Path(config.instance_dir).resolve()))
    app.config.update(
        SECRET_KEY=config.secret_key,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        AUTHSERVER=config,
    )
    db.init_app(app, config.database_url, prepare_threshold=config.db_prepare_threshold)
    rt = build_runtime(config, db.state(app))
    attach_runtime(app, rt)
    app.before_request(rt.keys.refresh_if_due)
    if rt.key_listener is not None:
        # Started by the first request a process serves (after gunicorn's fork).
        app.before_request(rt.key_listener.ensure_started)
    if rt.outbox_sender is not None:
        # Started by the first request a process serves; woken after each commit that
        # enqueued a message (a logout), so apps hear of it at once.
        app.before_request(rt.outbox_sender.ensure_started)
        wake_after_commit(db.state(app).session_factory, rt.outbox_sender.wake)
    AuthorizationServer().init_app(app)

    # Before init_web's form checks: a closed sign-up page is 404 whatever the request.
    app.before_request(signup.hide_closed_signup_pages)
    init_web(app, config)
    init_branding(app, config)
    init_locale(app)
    init_cors(app)
    init_rate_limits(app, config)
    csrf.exempt(oauth_views.bp)  # client-authenticated, not browser forms
    for blueprint in (
        oauth_views.bp,
        wellknown_views.bp,
        authorize.bp,
        oidc.bp,
        pages.bp,
        recovery.bp,
        two_step.bp,
        passkeys.bp,
        device.bp,
        signup.bp,
        email_links.bp,
        account_api.bp,
        admin_api.bp,
        client_registration.bp,
        admin_console.bp,
        openapi.bp,
        health.bp,
        dev_mail.bp,
    ):
        app.register_blueprint(blueprint)
    health.init_metrics(app)
    register_error_handlers(app)

    # Last: after-request hooks run in reverse order, so this commit runs first.
    app.after_request(commit_or_answer_unavailable)

    if config.trusted_proxies:
        proxies = config.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies
        )
    # The JWKS and the server metadata are answered from memory before Flask
    # (http/jwks_document.py, http/metadata_document.py).
    app.wsgi_app = JwksResponder(app.wsgi_app, rt)  # type: ignore[method-assign]
    app.wsgi_app = MetadataResponder(app.wsgi_app)  # type: ignore[method-assign]
    return app
