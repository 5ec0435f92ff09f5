"""The installed cliplit version, recorded in exported models, engines' sidecars and benchmark results."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def cliplit_version() -> str:
    try:
        return version("cliplit")
    except PackageNotFoundError:
        return "unknown"
