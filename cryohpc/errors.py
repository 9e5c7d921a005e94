"""The errors cryohpc raises, sorted by what the caller should do about them.

``UserError`` and its subclasses mean the request was wrong (bad input, a refused
action): show the message and exit non-zero, nothing was changed. ``TransientError``
means something outside our control did not answer (a scheduler, an SSH host): the
same request may succeed later. Anything else escaping cryohpc is a bug.
"""

from __future__ import annotations


class CryohpcError(Exception):
    """Base of every error cryohpc raises on purpose."""


class UserError(CryohpcError):
    """The request cannot be carried out as given; the message says why and what to do."""


class NotFoundError(UserError):
    """A project, workspace, job, lane or file named by the user does not exist."""


class InvalidTransitionError(UserError):
    """A job status change that the transition table does not allow."""


class ArchivedError(UserError):
    """A change to a project that is archived (read-only until unarchived)."""


class BuildError(UserError):
    """A job cannot be built or queued as connected (wrong type, missing slot, bad param)."""


class DatasetError(UserError):
    """A ``.cs`` file that cannot be read, or dataset operations that do not fit together."""


class InputFileError(UserError):
    """A user-supplied file (STAR, MRC, YAML) is malformed; the message names file and field."""


class ConfigError(UserError):
    """A site config or instance setting is malformed."""


class TransientError(CryohpcError):
    """Something we depend on did not answer; retrying later may succeed."""


class StoreError(UserError):
    """The database could not be used (full disk, corrupt file, locked too long); the
    message names the file and what SQLite said."""


class OutputFileError(CryohpcError):
    """A result could not be written (disk full, permission); names the file."""
