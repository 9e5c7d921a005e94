"""A CryoSPARC cluster lane (``cluster_info.json`` + ``cluster_script.sh``) as a cryohpc
site config and template, and back.

The import maps what both know, declares the script's other variables as custom
variables, and records in the lane's ``cryosparc:`` block what only CryoSPARC uses
(``worker_bin_path``, ``transfer_cmd_tpl``) and each command it had to change, so the
export writes the pair CryoSPARC had unless the admin changed cryohpc's side since.
Every change is listed with its reason: the admin reviews a diff, not a surprise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import meta

from ..errors import ConfigError
from ..named_files import read_named_file
from .cryosparc_script import CRYOHPC_ONLY, PROVIDED, Change, to_cryohpc, to_cryosparc
from .schedulers import KINDS

INFO_NAME, SCRIPT_NAME = "cluster_info.json", "cluster_script.sh"
_COMMANDS = {"qsub_cmd_tpl": "submit_cmd", "qstat_cmd_tpl": "status_cmd", "qdel_cmd_tpl": "cancel_cmd",
             "qinfo_cmd_tpl": "info_cmd"}
_KEPT = ("worker_bin_path", "transfer_cmd_tpl")  # CryoSPARC's alone: kept for the export
_KNOWN_KEYS = {"name", "title", "desc", "worker_bin_path", "cache_path", "cache_reserve_mb", "cache_quota_mb",
               "send_cmd_tpl", "transfer_cmd_tpl", "custom_vars", *_COMMANDS}


@dataclass
class Ported:
    """What the import made: the site config (as a mapping), the template text, and the
    list of what it did and why."""

    config: dict[str, Any]
    template: str
    template_name: str
    changes: list[str] = field(default_factory=list)
    script_changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    guessed_types: dict[str, str] = field(default_factory=dict)


def _read_pair(folder: Path) -> tuple[dict[str, Any], str]:
    info_path, script_path = folder / INFO_NAME, folder / SCRIPT_NAME
    for p in (info_path, script_path):
        if not p.is_file():
            raise ConfigError(f"{p}: not found (a CryoSPARC cluster folder holds {INFO_NAME} and {SCRIPT_NAME})")
    try:
        info = json.loads(read_named_file(info_path, INFO_NAME, ConfigError).decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{info_path}: not UTF-8 text") from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"{info_path}:{err.lineno}: not valid JSON: {err.msg}") from err
    if not isinstance(info, dict):
        raise ConfigError(f"{info_path}: expected a JSON object with name, qsub_cmd_tpl...")
    try:
        script = read_named_file(script_path, SCRIPT_NAME, ConfigError).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{script_path}: not UTF-8 text") from err
    return info, script


def _kind(info: dict[str, Any], script: str) -> str:
    """The scheduler, from the submit command and the script's directives."""
    submit = str(info.get("qsub_cmd_tpl", ""))
    if re.search(r"\bsbatch\b", submit) or re.search(r"^#SBATCH", script, re.M):
        return "slurm"
    if re.search(r"^#\$", script, re.M):
        return "sge"
    if re.search(r"^#PBS", script, re.M) or re.search(r"\bqsub\b", submit):
        return "pbs"
    raise ConfigError(f"{INFO_NAME}: cannot tell the scheduler (qsub_cmd_tpl {submit!r}, no #SBATCH/#PBS/#$ "
                      "lines in the script); give it with --kind")


def guess_type(name: str, value: Any) -> str:
    """A custom variable's type, from its value if there is one, else from its name."""
    if isinstance(value, bool) or str(value).strip().lower() in ("true", "false"):
        return "bool"
    text = str(value).strip() if value is not None else ""
    if re.fullmatch(r"[+-]?\d+", text):
        return "int"
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?", text):
        return "float"
    if value is None and re.search(r"(^num_|_count$|^n_|cpus?$|gpus?$|nodes$|_mb$|_gb$|hours$|minutes$|multiplier$)", name):
        return "float" if name.endswith("multiplier") else "int"
    return "str"


def _lane_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "cryosparc-lane"


def _submit(cmd: str, kind: str) -> str:
    """SLURM's submit answer without decoration (cryohpc reads the plain one too)."""
    if kind == "slurm" and "--parsable" not in cmd:
        return re.sub(r"\bsbatch\b", "sbatch --parsable", cmd, count=1)
    return cmd


def import_pair(folder: Path, *, name: str | None = None, kind: str | None = None,
                values: dict[str, Any] | None = None, types: dict[str, str] | None = None) -> Ported:
    """The cryohpc lane for a CryoSPARC cluster folder.

    ``values`` are CryoSPARC's "cluster configuration" key/value pairs (custom variable
    defaults); ``types`` overrides guessed types.

    Raises:
        ConfigError: a file is missing or unreadable, or the script never runs the job.
    """
    info, script = _read_pair(folder)
    kind = kind or _kind(info, script)
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind!r}: one of {', '.join(KINDS)}")
    lane = _lane_name(name or str(info.get("name") or folder.name))
    changes: list[str] = []
    warnings = [f"{INFO_NAME}: key {k!r} is not a CryoSPARC cluster key; ignored" for k in info
                if k not in _KNOWN_KEYS]
    kept: dict[str, Any] = {k: str(info[k]) for k in _KEPT if info.get(k)}
    if lane != (name or info.get("name")):
        if info.get("name"):
            kept["name"] = str(info["name"])
        changes.append(f"name {info.get('name')!r} -> {lane!r}: lane names are letters, digits and _ . -")
    try:
        converted = to_cryohpc(script, kind)
    except ValueError as err:
        raise ConfigError(f"{folder / SCRIPT_NAME}: {err}") from None
    template_name = f"{lane}.sh.j2"
    config: dict[str, Any] = {"name": lane, "type": "cluster", "kind": kind, "script_template": template_name}
    if info.get("title"):
        config["title"] = str(info["title"])
    if info.get("desc"):
        config["description"] = str(info["desc"])
    for key, ours in _COMMANDS.items():
        theirs = info.get(key)
        if not theirs:
            continue
        theirs = str(theirs)
        if key == "qstat_cmd_tpl":
            kept[key] = theirs  # CryoSPARC asks about one job; cryohpc about all of a lane's at once
            changes.append(f"qstat_cmd_tpl {theirs!r} -> the {kind} default {KINDS[kind].status!r}: cryohpc "
                           "asks once per poll about all the lane's jobs, and reads its own columns")
            continue
        value = _submit(theirs, kind) if key == "qsub_cmd_tpl" else theirs
        if value != theirs:
            kept[key] = theirs
            changes.append(f"{key} {theirs!r} -> submit_cmd {value!r}: the job id alone, nothing to misread")
        config[ours] = value
    send = str(info.get("send_cmd_tpl") or "").strip()
    if send and not re.fullmatch(r"\{\{-?\s*command\s*-?\}\}", send):
        config["send_cmd"] = send
    elif send:
        kept["send_cmd_tpl"] = send
        changes.append(f"send_cmd_tpl {send!r}: commands run here as they are (no send_cmd)")
    if info.get("transfer_cmd_tpl"):
        changes.append("transfer_cmd_tpl is not used: cryohpc's job directories are on the shared filesystem")
    if info.get("worker_bin_path"):
        changes.append(f"worker_bin_path {info['worker_bin_path']!r} is CryoSPARC's worker; cryohpc's runs as "
                       "{{ run_cmd }} (set worker.bin_path if the nodes need another cryohpc)")
    worker = {k: info[k] for k in ("cache_path", "cache_reserve_mb", "cache_quota_mb") if info.get(k) is not None}
    if worker:
        config["worker"] = worker
    custom, guessed = _custom_vars(converted.template, info, values or {}, types or {})
    if custom:
        config["custom_vars"] = custom
    if kept:
        config["cryosparc"] = kept
    return Ported(config, converted.template, template_name, changes, converted.changes,
                  warnings + converted.warnings, guessed)


def _custom_vars(template: str, info: dict[str, Any], values: dict[str, Any],
                 types: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every variable the template uses that cryohpc does not provide, as custom variables."""
    try:
        used = meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateSyntaxError as err:
        raise ConfigError(f"{SCRIPT_NAME}:{err.lineno}: template syntax error: {err.message}") from err
    given = {**(info.get("custom_vars") if isinstance(info.get("custom_vars"), dict) else {}), **values}
    out, guessed = [], {}
    for var in sorted(used - PROVIDED - set(jinja2.Environment().globals)):
        value = given.get(var)
        var_type = types.get(var) or guess_type(var, value)
        if var not in types:
            guessed[var] = var_type
        entry: dict[str, Any] = {"name": var, "type": var_type, "help": "from the CryoSPARC script"}
        if value is not None:
            entry["default"] = value
        else:
            entry["required"] = True
        out.append(entry)
    unknown = set(values) - {e["name"] for e in out}
    if unknown:
        raise ConfigError(f"value(s) for {', '.join(sorted(unknown))}: the script uses no such variable "
                          f"(it uses {', '.join(e['name'] for e in out) or 'no custom variables'})")
    return out, guessed


def write_ported(ported: Ported, dest: Path, *, replace: bool = False) -> tuple[Path, Path]:
    """Write the site config and its template beside each other under ``dest``.

    Raises:
        ConfigError: a file of that name exists (without ``replace``).
    """
    config_path, template_path = dest / f"{ported.config['name']}.yaml", dest / ported.template_name
    for p in (config_path, template_path):
        if p.exists() and not replace:
            raise ConfigError(f"{p}: exists; choose another --name, or --replace")
    dest.mkdir(parents=True, exist_ok=True)
    header = ("# Imported from a CryoSPARC cluster lane by 'cryohpc lane import-cryosparc'.\n"
              "# The cryosparc: block keeps what CryoSPARC alone uses, for 'lane export-cryosparc'.\n")
    template_path.write_text(ported.template)
    config_path.write_text(header + yaml.safe_dump({"lanes": [ported.config]}, sort_keys=False, width=200))
    return config_path, template_path


def export_pair(config: dict[str, Any], template: str) -> tuple[dict[str, Any], str, list[str]]:
    """CryoSPARC's ``cluster_info.json`` (as a mapping) and ``cluster_script.sh`` for a
    cryohpc cluster lane, with warnings for what CryoSPARC cannot use."""
    kept = dict(config.get("cryosparc") or {})
    kind = config["kind"]
    info: dict[str, Any] = {"name": kept.get("name", config["name"])}
    if config.get("title"):
        info["title"] = config["title"]
    if config.get("description"):
        info["desc"] = config["description"]
    worker = config.get("worker") or {}
    info["worker_bin_path"] = kept.get("worker_bin_path", worker.get("bin_path") or "")
    for key in ("cache_path", "cache_reserve_mb", "cache_quota_mb"):
        if worker.get(key) is not None:
            info[key] = worker[key]
    send = config.get("send_cmd")
    info["send_cmd_tpl"] = send if isinstance(send, str) and send else kept.get("send_cmd_tpl", "{{ command }}")
    warnings = []
    if isinstance(send, dict):
        warnings.append("send_cmd is an SSH host record; CryoSPARC needs a command: wrote '{{ command }}'")
    defaults = KINDS[kind]
    submit = config.get("submit_cmd") or defaults.submit
    info["qsub_cmd_tpl"] = kept["qsub_cmd_tpl"] if _submit(kept.get("qsub_cmd_tpl", "\0"), kind) == submit else submit
    status = config.get("status_cmd")
    info["qstat_cmd_tpl"] = status or kept.get("qstat_cmd_tpl")
    if not info["qstat_cmd_tpl"]:
        info["qstat_cmd_tpl"] = {"slurm": "squeue -j {{ cluster_job_id }}", "pbs": "qstat {{ cluster_job_id }}",
                                 "sge": "qstat -j {{ cluster_job_id }}"}[kind]
    info["qdel_cmd_tpl"] = config.get("cancel_cmd") or defaults.cancel
    info["qinfo_cmd_tpl"] = config.get("info_cmd") or defaults.info
    if kept.get("transfer_cmd_tpl"):
        info["transfer_cmd_tpl"] = kept["transfer_cmd_tpl"]
    for key in ("qsub_cmd_tpl", "qstat_cmd_tpl", "qdel_cmd_tpl", "qinfo_cmd_tpl", "send_cmd_tpl"):
        used = _names(info[key]) & CRYOHPC_ONLY - {"command"}
        if used:
            warnings.append(f"{key} {info[key]!r} uses {', '.join(sorted(used))}, which CryoSPARC does not provide")
    script, script_warnings = to_cryosparc(template)
    return info, script, warnings + script_warnings


def _names(source: str) -> set[str]:
    try:
        return set(meta.find_undeclared_variables(jinja2.Environment().parse(source)))
    except jinja2.TemplateSyntaxError:
        return set()
