"""Single-line text: the only kind of value that may reach a submission script or a
command line. A line break ends a ``#SBATCH`` comment and starts a command, whatever the
quoting, so values are refused where they enter (CLI, API, YAML) and again by the
renderer; templates, not values, are where an admin writes lines."""

from __future__ import annotations

import re
import unicodedata

LINE_BREAKS = {"\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"}


def line_problem(text: str) -> str | None:
    """What makes ``text`` unfit for one line of a script, or None."""
    for i, ch in enumerate(text):
        if ch in LINE_BREAKS or unicodedata.category(ch) in ("Zl", "Zp"):
            return f"a line break (U+{ord(ch):04X}) at character {i + 1}"
        if unicodedata.category(ch) == "Cc":
            return f"a control character (U+{ord(ch):04X}) at character {i + 1}"
    return None


def check_line(text: str, what: str) -> str:
    """``text`` unchanged if it is one line without control characters.

    Raises:
        ValueError: naming ``what`` and the offending character's position.
    """
    problem = line_problem(text)
    if problem:
        raise ValueError(f"{what} must be one line of text without control characters; it has {problem}")
    return text


def one_line(text: str, what: str) -> str:
    """``check_line`` for values a user typed: the error is a ``UserError``."""
    from .errors import UserError

    try:
        return check_line(text, what)
    except ValueError as err:
        raise UserError(str(err)) from None


def shown(text: str) -> str:
    """``text`` for a terminal: control and line-separator characters escaped (a title
    cannot move the cursor or rewrite a table)."""
    if line_problem(text) is None:
        return text
    return "".join(ch if unicodedata.category(ch) not in ("Cc", "Zl", "Zp") else ch.encode("unicode_escape").decode()
                   for ch in text)


def shown_lines(text: str) -> str:
    """``text`` of several lines for a terminal: its line breaks kept, every other control
    character escaped as :func:`shown` does."""
    return "\n".join(shown(line) for line in text.split("\n"))


_PLAIN = re.compile(r"[A-Za-z0-9._+=,-]")


def plain_file_name(name: str) -> str:
    """``name`` with every character but ASCII letters, digits and ``._+=,-`` made ``_``:
    a name that every program reads whole (RELION takes ``#``, ``:``, ``@`` and blanks in
    a STAR file's image names apart; a line break ends a script's line)."""
    return "".join(ch if _PLAIN.fullmatch(ch) else "_" for ch in name)


def is_plain_path(path: str) -> bool:
    """True if ``path`` is made of ``/`` and the characters :func:`plain_file_name` keeps."""
    return bool(path) and all(ch == "/" or _PLAIN.fullmatch(ch) for ch in path)
