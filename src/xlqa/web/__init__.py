"""Templates and static files shared by the standalone HTML report and the dashboard.

``templates/`` holds Jinja2 templates (autoescaped), ``static/`` the files a page uses as they are (the CSS).
The standalone report inlines the CSS, so it is one self-contained file; a served page can link it instead.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from jinja2 import Environment, PackageLoader, StrictUndefined


@cache
def templates() -> Environment:
    """The Jinja2 environment over ``xlqa/web/templates`` (autoescape on; an undefined variable is an error).

    ``keep_trailing_newline`` and block trimming make the output exactly what the template shows, so a page
    rendered twice from the same data is byte-identical.
    """
    return Environment(
        loader=PackageLoader("xlqa.web", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def static_text(name: str) -> str:
    """The text of ``xlqa/web/static/<name>`` (e.g. ``xlqa.css``)."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
