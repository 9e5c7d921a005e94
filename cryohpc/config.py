"""Where an instance lives and its settings (``<home>/config.yaml``).

An instance is named by ``--home DIR``, else ``$CRYOHPC_HOME``, else ``~/.cryohpc``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, NotFoundError

CONFIG_NAME = "config.yaml"
DB_NAME = "cryohpc.sqlite"


class InstanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance_uid: str = Field(default_factory=lambda: secrets.token_hex(4), description="tags cluster jobs")
    projects_root: str = Field(description="default parent of new project directories")
    poll_interval_s: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="master loop period")
    heartbeat_interval_s: float = Field(default=10.0, gt=0, allow_inf_nan=False, description="worker heartbeat period")
    heartbeat_timeout_s: float = Field(default=120.0, gt=0, allow_inf_nan=False, description="a job silent this long has failed")


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    if home is None:
        home = os.environ.get("CRYOHPC_HOME") or Path.home() / ".cryohpc"
    return Path(home).expanduser().resolve()


class InstancePaths:
    """The files of an instance, in one place."""

    def __init__(self, home: Path):
        self.home = home
        self.config = home / CONFIG_NAME
        self.db = home / DB_NAME
        self.site_configs = home / "site-configs"
        self.templates = home / "templates"  # submission script templates the site configs name
        self.jobtypes = home / "jobtypes"  # the site's declared job types (jobtypes/declared.py)
        self.master_lock = home / "master.lock"
        self.master_pid = home / "master.pid"
        self.master_log = home / "master.log"
        self.master_wake = home / "master.wake"  # a FIFO: writes wake the master (wakeup.py)


def init_instance(home: Path, projects_root: Path | None = None, **settings) -> InstanceConfig:
    """Create an instance directory with its config; an existing one is left as it is."""
    paths = InstancePaths(home)
    if paths.config.exists():
        if paths.site_configs.is_dir():  # instances made before these folders were made here
            paths.templates.mkdir(exist_ok=True)
            paths.jobtypes.mkdir(exist_ok=True)
        return load_config(home)
    try:  # checked before anything is made: a refused setting leaves no half instance
        cfg = InstanceConfig(projects_root=str((projects_root or home / "projects").resolve()), **settings)
    except ValidationError as err:
        raise ConfigError(f"cannot create an instance at {home}: {_first_error(err)}") from None
    home.mkdir(parents=True, exist_ok=True)
    paths.site_configs.mkdir(exist_ok=True)
    paths.templates.mkdir(exist_ok=True)
    paths.jobtypes.mkdir(exist_ok=True)
    tmp = paths.config.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    os.replace(tmp, paths.config)
    return cfg


def load_config(home: Path) -> InstanceConfig:
    """Raises:
    NotFoundError: no instance at ``home`` (run ``cryohpc init``).
    ConfigError: the config file is malformed.
    """
    path = InstancePaths(home).config
    if not path.exists():
        raise NotFoundError(f"no cryohpc instance at {home} (run 'cryohpc --home {home} init')")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return InstanceConfig.model_validate(data)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    except ValidationError as err:
        raise ConfigError(f"{path}: {_first_error(err)}") from err


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"])
    return f"{loc}: {e['msg']}" + (f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else "")
