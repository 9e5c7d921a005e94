"""Job types a site declares under ``<home>/jobtypes/``, reloaded when the folder changes."""

from __future__ import annotations

from pathlib import Path

from .declared import load_folder
from .spec import JobTypeSpec


class SiteJobTypes:
    def __init__(self) -> None:
        self.folder: Path | None = None
        self.problems: list[str] = []
        self._seen: tuple | None = None
        self._specs: dict[str, JobTypeSpec] = {}

    def _signature(self) -> tuple:
        if self.folder is None or not self.folder.is_dir():
            return (str(self.folder),)
        sig: list = [str(self.folder)]
        for f in sorted(self.folder.glob("*.yaml")):
            try:
                st = f.stat()
            except FileNotFoundError:  # removed since the listing
                continue
            sig.append((f.name, st.st_mtime_ns, st.st_size))
        return tuple(sig)

    def specs(self, builtin: dict[str, JobTypeSpec]) -> dict[str, JobTypeSpec]:
        """The site's job types now; a name the package already has is refused (a problem)."""
        sig = self._signature()
        if sig == self._seen:
            return self._specs
        specs, problems = load_folder(self.folder) if self.folder is not None else ([], [])
        out: dict[str, JobTypeSpec] = {}
        for spec in specs:
            if spec.name in builtin:
                problems.append(f"{spec.declared_in}: job type {spec.name!r} is built in; give yours another name")
            elif spec.name in out:
                problems.append(f"{spec.declared_in}: job type {spec.name!r} is also declared in {out[spec.name].declared_in}")
            else:
                out[spec.name] = spec
        self._specs, self.problems, self._seen = out, problems, sig
        return out
