"""Helpers shared by the modules that read user-written YAML (catalog, hardware, sweep file).

Kept apart so that `bench.catalog`, `bench.catalog.hardware`, `bench.plan.sweepfile` and `bench.plan`
can all import them without importing one another.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import ConfigError

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


class Strict(BaseModel):
    """Base of every user-written config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def catalog_dir() -> Path:
    """The folder holding models.yaml and hardware/ (env `BENCH_CATALOG_DIR` overrides)."""
    env = os.environ.get("BENCH_CATALOG_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent


def read_yaml(path: Path) -> Any:
    """The parsed YAML of a catalog file; ConfigError naming the file when absent or invalid."""
    import yaml  # here, not at the top: safe_id and Strict are imported where no YAML is read

    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path.name}: not valid YAML ({str(e).splitlines()[0]})") from None


def describe_error(err: ValidationError) -> str:
    """The first validation error of a catalog entry as one line naming the field."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        msg = f"unknown field '{loc}'"
    elif first["type"] == "missing":
        msg = f"missing field '{loc}'"
    else:
        text = first["msg"].removeprefix("Value error, ")
        msg = f"field '{loc}': {text}" if loc else text
    more = len(err.errors()) - 1
    return msg + (f" (and {more} more)" if more else "")


def safe_id(text: str) -> str:
    """`text` reduced to [A-Za-z0-9.-]: a file-name-safe part of a point id, in which "_"
    only ever separates the parts (config, workload, load, repeat)."""
    return _ID_UNSAFE.sub("-", text).strip("-") or "x"
