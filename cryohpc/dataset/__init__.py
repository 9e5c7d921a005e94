"""CryoSPARC ``.cs`` datasets, shared by master and worker."""

from .core import Dataset, new_uids, text_of
from .csfile import read_cs, write_cs

__all__ = ["Dataset", "new_uids", "read_cs", "text_of", "write_cs"]
