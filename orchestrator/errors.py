"""The exceptions djdask raises.

Every error a user can cause derives from :class:`DjdaskError` and from the
builtin exception it resembles, so callers may catch either.  Messages say what
failed, the value seen, and how to fix it; the CLI prints them as one paragraph
and exits with code 2.
"""

from __future__ import annotations

__all__ = [
    "DjdaskError",
    "DatabaseUnavailableError",
    "DatabaseOutageError",
    "StoreUnavailableError",
    "StoreError",
    "PipelineImportError",
    "NoTablesError",
    "UnknownTableError",
    "RestrictionError",
    "JobsTableError",
    "ProfileError",
    "ProfileNotFoundError",
    "InvalidInputError",
    "SettingsError",
    "DataJointCompatibilityError",
    "CampaignNotFoundError",
    "SubmitRefused",
]


class DjdaskError(Exception):
    """Base class of the errors djdask reports to its users."""


class DatabaseUnavailableError(DjdaskError, ConnectionError):
    """The database could not be reached or refused the connection."""


class DatabaseOutageError(DatabaseUnavailableError):
    """The database went away during a campaign and stayed away past the outage tolerance."""


class StoreUnavailableError(DjdaskError, ConnectionError):
    """An object store (S3, a network filesystem) could not be reached: worth another try."""


class StoreError(DjdaskError, ValueError):
    """The store for ``<xarray@>`` arrays is misnamed, or cannot be written (checked before a campaign starts)."""


class PipelineImportError(DjdaskError, ImportError):
    """The pipeline module named by the user cannot be imported."""


class NoTablesError(DjdaskError, LookupError):
    """The pipeline module defines no DataJoint tables that djdask can run."""


class UnknownTableError(DjdaskError, LookupError):
    """A target table named by the user is not in the pipeline."""


class RestrictionError(DjdaskError, ValueError):
    """A ``-r ATTR=VALUE`` restriction is malformed or names an unknown attribute."""


class JobsTableError(DjdaskError, RuntimeError):
    """A jobs table exists in a layout djdask cannot use safely."""


class ProfileError(DjdaskError, ValueError):
    """A cluster profile's settings are missing, malformed or unusable here."""


class ProfileNotFoundError(DjdaskError, LookupError):
    """No cluster profile, or no profile kind, has the name given."""


class InvalidInputError(DjdaskError, ValueError):
    """An argument or setting has a value djdask cannot use (the message says which, and why)."""


class SettingsError(InvalidInputError):
    """A ``djdask.*`` setting, or the Dask config file holding it, cannot be used."""


class DataJointCompatibilityError(DjdaskError, ImportError):
    """The installed DataJoint lacks, or has changed, an entry point djdask relies on."""


class CampaignNotFoundError(DjdaskError, LookupError):
    """No campaign record has the id given (or more than one starts with it)."""


class CampaignConflictError(DjdaskError, RuntimeError):
    """Another campaign already does what this one would (a second following campaign)."""


class SubmitRefused(RuntimeError):
    """The batch system refused a worker job (reported to the campaign, not logged twice).
    Not a :class:`DjdaskError`: it ends no command; the pool's scaling reports it."""
