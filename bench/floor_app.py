"""The floor for HTTP operations: a bare Flask JSON endpoint, nothing else.

Served by the same gunicorn config as authserver (`gunicorn -c gunicorn.conf.py
'bench.floor_app:create_app()'`), so what authserver adds on top of Flask and gunicorn is the
difference between the two.
"""

from __future__ import annotations

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue


def create_app() -> Flask:
    app = Flask(__name__)

    @app.route("/floor", methods=["GET", "POST"])
    def floor() -> ResponseReturnValue:
        return jsonify(ok=True)

    return app
