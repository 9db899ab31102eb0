"""`oneapi import`: a running One API's (or new-api's) database moved into config.yaml + secrets.env.

database.py reads the tables, conversion.py maps them (channel_types.yaml is the type-id table), output.py writes
the files and the report of what did not map.
"""

from __future__ import annotations

from pathlib import Path

from .conversion import Imported, channel_types, convert
from .database import DatabaseError, OneApiData, parse_url, read_database
from .output import existing_outputs, write_import

__all__ = ["DatabaseError", "Imported", "OneApiData", "channel_types", "convert", "existing_outputs", "import_database",
           "parse_url", "read_database", "write_import"]


def import_database(url: str, out_dir: Path, providers_dir: str | None = None) -> tuple[Imported, dict[str, Path]]:
    """Read the database at `url`, write DIR/config.yaml, DIR/secrets.env and DIR/import-report.md."""
    data = read_database(url)
    imported = convert(data, providers_dir)
    return imported, write_import(imported, out_dir, parse_url(url).redacted())
