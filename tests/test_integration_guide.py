"""docs/INTEGRATION.md stays true: every client registration it shows is accepted by the
command line as written, and registers what the guide says it does."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import requests
from flask import Flask

from authserver.cli import main
from authserver.db import db
from authserver.services.clients import find_client
from tests.conftest import LiveServer
from tests.helpers import HANG_SECONDS, PASSWORD, make_client, make_resource_server, make_user

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "INTEGRATION.md"
SHELL_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
GUIDE_ISSUER = "https://login.example.com"
PHOTOS_API = "https://api.photos.example.com"


def _registrations() -> list[list[str]]:
    """Every `authserver clients create ...` line of the guide's sh blocks, continuations
    joined and trailing comments dropped, as argument lists."""
    commands = []
    for block in SHELL_BLOCK.findall(GUIDE.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:3] == ["authserver", "clients", "create"]:
                commands.append(words[1:])
    return commands


def test_the_guide_shows_a_registration_for_each_kind_of_app() -> None:
    names = {args[args.index("--name") + 1] for args in _registrations()}

    assert names == {
        "Photos",
        "Photos (web)",
        "Photos for phones",
        "Photos API",
        "Photos importer",
    }


def test_every_registration_in_the_guide_is_accepted_as_written(committed_app: Flask) -> None:
    runner = committed_app.test_cli_runner()
    for args in _registrations():
        result = runner.invoke(main, args)

        assert result.exit_code == 0, f"{shlex.join(args)}: {result.output}"
        client_id = re.search(r'client_id"?:\s+"?([A-Za-z0-9_-]+)', result.output)
        assert client_id, result.output
        with db.transaction(committed_app) as session:
            client = find_client(session, client_id.group(1), fresh=True)
            assert client is not None
            public = "--public" in args
            assert (client.token_endpoint_auth_method == "none") == public
            for option, registered in (
                ("--redirect-uri", client.redirect_uris),
                ("--serves", client.served_audiences),
                ("--audience", client.audiences),
            ):
                wanted = [args[i + 1] for i, word in enumerate(args) if word == option]
                assert list(registered) == wanted, option


def test_the_python_resource_server_in_the_guide_runs_against_a_live_server(
    live_server: LiveServer,
) -> None:
    """The guide's Flask snippet, with the issuer and the API's credentials put in."""
    (snippet,) = PYTHON_BLOCK.findall(GUIDE.read_text())
    with db.transaction(live_server.app) as session:
        user = make_user(live_server.app, session)
        photos_app = make_client(session, scopes=["photos:read"], audiences=[PHOTOS_API])
        api = make_resource_server(session, serves=PHOTOS_API)
    assert photos_app.client_secret is not None
    namespace: dict[str, Any] = {
        "__name__": "photos_api",
        "API_CLIENT_ID": api.client.client_id,
        "API_CLIENT_SECRET": api.client_secret,
    }
    exec(snippet.replace(GUIDE_ISSUER, live_server.url), namespace)  # noqa: S102 (the guide's code)
    verifier = namespace["verifier"]
    try:
        token = requests.post(
            live_server.url + "/oauth/token",
            data={
                "grant_type": "password",
                "username": "ann@example.com",
                "password": PASSWORD,
                "scope": "photos:read",
            },
            auth=(photos_app.client.client_id, photos_app.client_secret),
            timeout=HANG_SECONDS,
        ).json()["access_token"]
        api_client = namespace["app"].test_client()

        answer = api_client.get("/photos", headers={"Authorization": f"Bearer {token}"})

        assert answer.status_code == 200, answer.text
        assert answer.json == {"owner": str(user.id)}
        assert verifier.revocation_feed_running
        assert api_client.get("/photos").status_code == 401
    finally:
        verifier.close()
