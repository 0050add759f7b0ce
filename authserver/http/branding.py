"""The operator's branding on every page: the product's name and logo, the primary colour,
the support link (AUTHSERVER_PRODUCT_NAME, _LOGO_URL, _PRIMARY_COLOR, _SUPPORT_URL), and a
folder of templates that take precedence over the package's (AUTHSERVER_TEMPLATE_DIR)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader

from authserver.config import Config
from authserver.resource.dpop import web_origin

bp = Blueprint("branding", __name__)

BRANDING_CSS_PATH = "/branding.css"


@dataclass(frozen=True)
class Brand:
    product_name: str
    logo_url: str
    primary_color: str
    support_url: str

    @property
    def logo_origin(self) -> str | None:
        """Where the logo comes from when it is not this server: the pages' Content Security
        Policy lets images load from there (and from nowhere else)."""
        return origin_of(self.logo_url)


def origin_of(url: str | None) -> str | None:
    """The origin of an absolute http(s) URL (the Content Security Policy's source for it);
    None for a path or nothing."""
    return web_origin(url) if url else None


def brand_of(config: Config) -> Brand:
    return Brand(
        product_name=config.product_name,
        logo_url=config.logo_url,
        primary_color=config.primary_color,
        support_url=config.support_url,
    )


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def relative_luminance(hex_color: str) -> float:
    """WCAG 2.2 relative luminance of ``#rgb`` or ``#rrggbb``."""
    digits = hex_color.lstrip("#")
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    r, g, b = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast_ratio(first: str, second: str) -> float:
    """WCAG 2.2 contrast ratio of two colours, 1 to 21."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


# WCAG 2.2 SC 1.4.3: normal text needs 4.5:1 against its background.
TEXT_CONTRAST = 4.5


def branding_css(color: str) -> str:
    """The stylesheet that paints buttons and links in the primary colour. Button labels are
    white or black, whichever reads on it; links (text on the page's light canvas) take the
    colour only where it reads there, and keep the stylesheet's own in the dark scheme."""
    on_color = "#fff" if contrast_ratio(color, "#ffffff") >= TEXT_CONTRAST else "#000"
    rules = [f":root {{ --accent: {color}; }}"]
    if contrast_ratio(color, "#ffffff") >= TEXT_CONTRAST:
        rules.append(
            f"@media (prefers-color-scheme: light) {{ :root {{ --accent-text: {color}; }} }}"
        )
    rules.append(f"button:not(.secondary):not(.danger):not(.link) {{ color: {on_color}; }}")
    return "\n".join(rules) + "\n"


@bp.get(BRANDING_CSS_PATH)
def stylesheet() -> Response:
    color = current_app.config["AUTHSERVER"].primary_color
    response = Response(branding_css(color) if color else "", mimetype="text/css")
    # Settings change only with a restart; browsers may keep it a while.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def init_branding(app: Flask, config: Config) -> None:
    brand = brand_of(config)
    app.register_blueprint(bp)

    @app.context_processor
    def inject_brand() -> dict[str, Brand]:
        return {"brand": brand}

    if config.template_dir:
        # Jinja asks the operator's folder first, then the package's templates.
        package_loader = app.jinja_loader
        loaders: list[BaseLoader] = [FileSystemLoader(config.template_dir)]
        if package_loader is not None:
            loaders.append(package_loader)
        app.jinja_loader = ChoiceLoader(loaders)
