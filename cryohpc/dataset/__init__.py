"""CryoSPARC ``.cs`` datasets, shared by master and worker."""

from .core import Dataset, new_uids
from .csfile import read_cs, write_cs

__all__ = ["Dataset", "new_uids", "read_cs", "write_cs"]
