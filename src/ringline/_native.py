"""Whether this copy of ringline has its compiled core, and if not, why.

The core (``ringline._core.core``) is built on Linux with a C compiler.
Where it was not built (another OS, no compiler, ``RINGLINE_NO_EXTENSION=1``)
or does not import (built for another Python, a missing symbol), ringline
still imports: ``ringline.NATIVE`` is False and ``ringline.new_event_loop()``
returns asyncio's own loop.  Importing this module imports nothing else of
ringline's, so it works on any platform.
"""

from __future__ import annotations

import os


def _import_core() -> str | None:
    """None if the compiled core imports, else the import error, as text."""
    try:
        from ._core import core  # noqa: F401
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


#: The import error of the compiled core, as text; None when it imported.
IMPORT_ERROR: str | None = _import_core()
#: True when ringline runs on its own compiled core (io_uring / poll backends).
NATIVE: bool = IMPORT_ERROR is None

_REASON_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_core",
                            "NO_EXTENSION.txt")


def build_note() -> str | None:
    """Why the core was left out when this copy was built (setup.py writes it
    into the package), or None (built, or no record)."""
    try:
        with open(_REASON_FILE, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def why_not() -> str | None:
    """One paragraph saying why the compiled core is not in use, or None."""
    if NATIVE:
        return None
    note = build_note()
    text = f"the compiled core ringline._core.core did not import ({IMPORT_ERROR})"
    if note:
        text += f"; at build time: {note}"
    return text
