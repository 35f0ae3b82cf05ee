"""'Did you mean …?': the closest known name to a misspelt one, for the API's 422 messages and the trainer's
config overrides alike."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to `name` (difflib ratio ≥ 0.6), or None when nothing is close."""
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None
