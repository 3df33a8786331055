"""The pack's version, read from pyproject.toml (the registry's source of truth) without tomllib (Python 3.11+)."""

import re
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_TABLE = re.compile(r"^\[([^\]]+)\]\s*$")
_VERSION = re.compile(r'^version\s*=\s*"([^"]+)"\s*$')


def read_pack_version(pyproject: Path = PYPROJECT) -> str:
    """The `version` of the [project] table (a plain string there, as the registry requires)."""
    table = None
    for line in pyproject.read_text().splitlines():
        header = _TABLE.match(line)
        if header:
            table = header.group(1).strip()
        elif table == "project" and (version := _VERSION.match(line)):
            return version.group(1)
    raise RuntimeError(f"{pyproject} has no version in its [project] table")


PACK_VERSION = read_pack_version()
