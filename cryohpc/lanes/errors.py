"""What a lane's launch, poll or kill can tell the scheduler went wrong, in three kinds
that each call for one action: hold the job and retry, look for the job before trying
again, or fail the job. Every backend translates its own failures into these, so the
scheduler knows nothing of SSH, subprocesses or scheduler commands."""

from __future__ import annotations

from ..errors import CryohpcError, TransientError


class LaneUnreachable(TransientError):
    """Nothing was started (or the lane could not say whether an earlier launch was):
    the job waits and is tried again."""


class LaunchUnconfirmed(TransientError):
    """The launch may have happened (the answer was lost): before trying again, the lane
    must look for the job by its tag."""


class LaunchRefused(CryohpcError):
    """The lane will not run this job as it stands (submit refused, helper failed,
    launcher missing): the job fails with this message."""


__all__ = ["LaneUnreachable", "LaunchRefused", "LaunchUnconfirmed"]
