"""SIGHUP: what can change without a restart, read again from the environment file.

Only LOGGER_LEVEL and PRIORITY are applied live; any other variable that changed in the file
is named in the log as needing a restart (its value is baked into running workers).
"""
from __future__ import annotations

import logging
import os
import shlex
from dataclasses import fields
from typing import Mapping

from link.config import Config, ConfigError, load

logger = logging.getLogger(__name__)

LIVE = ("logger_level", "priority")


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (comments, quotes, `export`)."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            text = line.strip()
            if not text or text.startswith(("#", ";")):
                continue
            if text.startswith("export "):
                text = text[len("export "):].strip()
            key, sep, raw = text.partition("=")
            if not sep or not key.strip().isidentifier():
                raise ConfigError(f"{path}:{number}: not a KEY=VALUE line")
            try:
                parts = shlex.split(raw, comments=False)
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: {exc}") from None
            values[key.strip()] = " ".join(parts)
    return values


def reread(path: str, current: Config, base_env: Mapping[str, str] | None = None) -> Config:
    """The configuration with the file's values over the process environment; ConfigError
    (one line, naming the variable or the line) when the file is wrong."""
    try:
        overrides = read_env_file(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    new = load({**(os.environ if base_env is None else base_env), **overrides})
    for f in fields(Config):
        if f.name not in LIVE and getattr(new, f.name) != getattr(current, f.name):
            logger.warning("SIGHUP: %s changed in %s: it takes effect at the next restart", f.name.upper(), path)
    return new
