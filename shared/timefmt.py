"""The one way times are shown to people (the CLI's tables and the review UI): UTC, to the second."""

from __future__ import annotations

from datetime import datetime, timezone

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def timestamp(value: datetime | str | None) -> str:
    """A datetime or an ISO 8601 string (as the API sends them) as TIMESTAMP_FORMAT; '' for None. A naive
    datetime is taken as UTC (every stored time is UTC); a string that is not a time is returned as is."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)
