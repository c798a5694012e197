"""Credentials never written or printed: the password of a URL (``scheme://user:PASSWORD@host``,
e.g. a study database's) is masked as ``***`` in every command line, config, message and file
that dmlkit writes."""

from __future__ import annotations

import re

_PASSWORD = re.compile(r"""(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s"']*:)[^\s"']*(?=@)""")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    >>> mask_secrets("postgresql+psycopg://dmlkit:SECRET@127.0.0.1:5432/db and sqlite:///a.db")
    'postgresql+psycopg://dmlkit:***@127.0.0.1:5432/db and sqlite:///a.db'
    """
    return _PASSWORD.sub(r"\g<head>***", text)
