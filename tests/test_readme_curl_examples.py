"""The README's curl examples work as written, with what `make run` prints.

`authserver dev seed` (what `make run` runs before serving) prints an ``export ...`` line; a
shell that ran it runs the README's example block against a server on that database, and
every answer is a token.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from tests.compose_stack import ROOT, sh_blocks
from tests.conftest import gunicorn_files, listening_socket, scratch_database, url_of
from tests.helpers import HANG_SECONDS, wait_until
from tests.test_cli import _base_environment, run_cli

BIN = Path(sys.executable).parent


def readme_examples() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Examples, after pasting the `export ...` line that `make run` prints")
    blocks = sh_blocks(readme[start:])
    return blocks[0]


def answers(output: str) -> list[dict[str, Any]]:
    """The JSON documents curl printed one after another (curl -s adds no newline)."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    output = output.strip()
    while position < len(output):
        document, end = decoder.raw_decode(output, position)
        found.append(document)
        position = end
        while position < len(output) and output[position].isspace():
            position += 1
    return found


def test_the_readme_curl_examples_work_with_the_lines_make_run_prints(
    database_url: str, tmp_path: Path
) -> None:
    listener = listening_socket()
    issuer = url_of(listener)
    with scratch_database(database_url, "readme_curl", tmp_path) as url:
        env = {
            **_base_environment(tmp_path / "instance"),
            "DATABASE_URL": url,
            "AUTHSERVER_ISSUER": issuer,
            "AUTHSERVER_LOG_LEVEL": "WARNING",
        }
        assert run_cli("db", "upgrade", env=env).returncode == 0
        seeded = run_cli("dev", "seed", env=env)
        assert seeded.returncode == 0, seeded.stderr
        exports = re.findall(r"^export .+$", seeded.stdout, re.MULTILINE)
        assert len(exports) == 1, seeded.stdout
        assert f"ISSUER={issuer} " in exports[0]
        with listener:
            server = subprocess.Popen(
                [
                    str(BIN / "gunicorn"),
                    "authserver:create_app()",
                    "-b",
                    f"fd://{listener.fileno()}",
                    "-w",
                    "1",
                    "--threads",
                    "2",
                ],
                env={**env, **gunicorn_files(tmp_path)},
                cwd=env["AUTHSERVER_INSTANCE_DIR"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(listener.fileno(),),
            )
        try:

            def serving() -> bool:
                assert server.poll() is None
                try:
                    return requests.get(issuer + "/readyz", timeout=30).status_code == 200
                except requests.RequestException:
                    return False

            wait_until(serving, "the server to answer")
            shell = {
                key: value
                for key, value in os.environ.items()
                if key not in {"ISSUER", "CLIENT_ID", "CLIENT_SECRET", "EMAIL", "PASSWORD"}
            }
            result = subprocess.run(
                ["bash", "-c", "set -euo pipefail\n" + exports[0] + "\n" + readme_examples()],
                env=shell,
                capture_output=True,
                text=True,
                timeout=HANG_SECONDS,
                check=False,
            )
        finally:
            server.terminate()
            server.wait(timeout=HANG_SECONDS)
    assert result.returncode == 0, result.stdout + result.stderr
    tokens = answers(result.stdout)
    # The password grant, the rotation, client_credentials: three answers, each a token. The
    # shell has none of the exported names but from the export line, and `set -u` refuses an
    # unset one: the examples use nothing that `make run` does not print.
    assert len(tokens) == 3, result.stdout
    for token in tokens:
        assert token.get("token_type") == "Bearer", token
        assert token["access_token"]
    assert tokens[0]["refresh_token"]
    assert tokens[1]["refresh_token"]
