"""mkdocs hooks (``hooks:`` in mkdocs.yml).

Our docstrings use Sphinx roles (``:class:`Foo```, ``:func:`~a.b```) that Markdown does not know; in the
API reference they would show as ``:class:`` followed by the code. This turns each into plain code.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):<code>~?")


def on_page_content(html: str, **kwargs: object) -> str:
    return _ROLE.sub("<code>", html)
