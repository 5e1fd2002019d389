"""Griffe extension: render the reStructuredText bits of kalmanad's docstrings as Markdown.

The docstrings are Google style (``Args:``, ``Returns:``) with a few Sphinx habits,
which Markdown would show literally:

* roles such as ``:class:`~kalmanad.LinearSDE``` and ``:func:`kalman_filter``` become
  code spans (the ``~`` prefix keeps the last component, as Sphinx shows it);
* a paragraph ending in ``::`` (a literal block follows) ends in ``:``.

Only the rendered text changes; the source docstrings stay as they are.
"""

from __future__ import annotations

import re

from griffe import Extension

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)


def _role(m: re.Match) -> str:
    tilde, target = m.group(1), m.group(2)
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def to_markdown(text: str) -> str:
    return _LITERAL.sub(r"\1:", _ROLE.sub(_role, text))


class SphinxRoles(Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
