"""Input checks more than one service applies the same way."""

from __future__ import annotations

import re

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def email_problem(email: str) -> str | None:
    """Why `email` is not a usable address (es-MX), or None."""
    if not EMAIL_RE.match(email) or len(email) > 320:
        return "El correo electrónico no es válido."
    return None
