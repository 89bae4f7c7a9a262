"""Workers without database access (a profile's ``database: none``): what their jobs must not carry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["without_credentials", "without_database"]

#: Environment variables kept from the jobs of a profile with ``database: none`` (unless its
#: ``pass-environment`` names them): DataJoint's and the database clients' settings, object
#: stores' keys, and anything named like a secret.
_CREDENTIAL_PREFIXES = ("DJ_", "DATAJOINT", "PG", "MYSQL", "AWS_", "AZURE_", "GOOGLE_")
_CREDENTIAL_WORDS = ("PASS", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE")


def without_database(raw: dict[str, Any]) -> bool:
    """Whether a profile's workers have no database access (``database: none``)."""
    value = raw.get("database", True)
    return value is False or str(value).strip().lower() in ("none", "false", "no")


def without_credentials(environment: dict[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """``environment`` without the variables that could carry a credential (database, stores)."""
    kept = set(keep)
    return {
        name: value
        for name, value in environment.items()
        if name in kept
        or not (name.upper().startswith(_CREDENTIAL_PREFIXES) or any(w in name.upper() for w in _CREDENTIAL_WORDS))
    }
