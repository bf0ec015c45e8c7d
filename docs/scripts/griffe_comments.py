"""A griffe extension (``extensions:`` of mkdocstrings' python handler in mkdocs.yml): an attribute
documented with ``#:`` comment lines right above it (the Sphinx autodoc convention our code uses, e.g.
``Detector.budgets``) gets those lines as its docstring, so the API reference shows it."""

from __future__ import annotations

import ast
from typing import Any

import griffe


class HashColonComments(griffe.Extension):
    def on_attribute_instance(self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute,
                              agent: griffe.Visitor | griffe.Inspector, **kwargs: Any) -> None:
        if attr.docstring is not None or not isinstance(node, ast.AST) or attr.lineno is None:
            return
        try:
            lines = attr.parent.lines_collection[attr.parent.filepath]  # the module's source lines
        except (KeyError, AttributeError, TypeError):
            return
        comment: list[str] = []
        index = attr.lineno - 2  # the line above the attribute (lineno is 1-based)
        while index >= 0 and lines[index].strip().startswith("#:"):
            comment.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        if comment:
            attr.docstring = griffe.Docstring("\n".join(comment), parent=attr)
