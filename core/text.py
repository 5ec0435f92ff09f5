"""Wording shared by every user-facing message: counts with the right plural."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 frame``, ``0 frames``, ``2 frames`` (nouns whose plural is a trailing s, which is all cliplit prints)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
