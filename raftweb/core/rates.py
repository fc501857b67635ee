"""Parsing of rate strings ("30/min"); no Django imports, so settings can validate with it."""

from __future__ import annotations

import re

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$")
_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PERIODS |= {"h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(text: str) -> tuple[int, int] | None:
    """``"30/min"`` → (30, 60); ``"100/10s"`` → (100, 10); ``""`` or ``"off"`` → None.

    Raises ``ValueError`` naming the accepted form (settings turn it into a start-up error).
    """
    if text.strip().lower() in ("", "off", "none", "0"):
        return None
    match = _RATE_RE.match(text.lower())
    if not match or int(match.group(1)) < 1:
        raise ValueError(
            f"{text!r} is not a rate: use N/period, e.g. 30/min, 1000/hour, 5/10s (or 'off')."
        )
    count, multiple, unit = match.groups()
    return int(count), (int(multiple) if multiple else 1) * _PERIODS[unit]
