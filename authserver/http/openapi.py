"""The OpenAPI 3.1 description of the JSON and form endpoints, served as written in
``authserver/openapi.json`` (tests keep it true to the routes)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from flask import Blueprint, Response, jsonify

bp = Blueprint("openapi", __name__)


@cache
def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        files("authserver").joinpath("openapi.json").read_text(encoding="utf-8")
    )
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    response = jsonify(openapi_document())
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
