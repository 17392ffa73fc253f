"""The one Jinja environment: autoescaping, templates from render/templates (and the web app's own folder)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


def environment(*folders: Path) -> jinja2.Environment:
    """Autoescaping Jinja environment over `folders` first, then render/templates; filter `q` quotes a URL part."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([*map(str, folders), str(TEMPLATES)]),
                             autoescape=True, keep_trailing_newline=True)
    env.filters["q"] = lambda value: quote(str(value), safe="")
    return env
