"""Reading training options from a YAML, TOML or JSON file (``cliplit train --config``) into a plain mapping.

Kept apart from ``TrainConfig`` so that the file formats and their parsers (PyYAML, tomllib) are one concern; the
mapping becomes a config through ``cliplit.train.config.from_mapping``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cliplit.train.config import ConfigError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The option mapping of a YAML (.yaml, .yml), TOML (.toml) or JSON (.json) file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            data = _toml_loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path}: unknown format {suffix!r}; use .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except Exception as error:  # the parsers' own exception types differ; all mean "malformed file"
        raise ConfigError(f"config file {path} is not valid {suffix[1:].upper()}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option names to values")
    return data


def _toml_loads(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 only
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("TOML config files need Python 3.11+ or the 'tomli' package; use YAML instead") from None
    return tomllib.loads(text)
