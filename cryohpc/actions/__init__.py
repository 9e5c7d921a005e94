"""What users do to jobs once built, one module per action, each with the check that
says whether (and what) it would do and the function that does it. CLI and API, for one
job or a selection (``batch``), use these and nothing else. CryoSPARC's names and rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .clearing import check_clear, clear_job
from .cloning import check_clone, clone_chain, clone_job
from .common import Refused
from .completion import check_mark_complete, mark_complete
from .context import ActionContext
from .deleting import check_delete, delete_job
from .exporting import check_export, export_job, import_job, verify_export
from .finality import check_mark_final, check_unmark_final, mark_final, unmark_final
from .intermediate import check_clear_intermediate, clear_intermediate
from .killing import check_kill, kill_job
from .labels import check_tag, describe_job, tag_job
from .membership import check_link, check_move, check_unlink, link_job, move_job, unlink_job
from .queueing import PRIORITY_RANGE, check_queue, queue_job
from .restarting import check_restart, check_resume, restart_job, restart_lock, resume_job


@dataclass(frozen=True)
class ActionDef:
    name: str
    check: Callable  # (ctx, tx, job, **args) -> what it would do; raises UserError when refused
    apply: Callable  # (inst, project_uid, job_uid, **args, ctx=, journal=) -> Job | Path
    done: str  # past tense, for reports


ACTIONS: dict[str, ActionDef] = {a.name: a for a in [
    ActionDef("queue", check_queue, queue_job, "queued"),
    ActionDef("kill", check_kill, kill_job, "killed"),
    ActionDef("clear", check_clear, clear_job, "cleared"),
    ActionDef("restart", check_restart, restart_job, "restarted"),
    ActionDef("resume", check_resume, resume_job, "resumed"),
    ActionDef("clear-intermediate", check_clear_intermediate, clear_intermediate, "intermediate results cleared"),
    ActionDef("mark-complete", check_mark_complete, mark_complete, "marked complete"),
    ActionDef("mark-final", check_mark_final, mark_final, "marked final"),
    ActionDef("unmark-final", check_unmark_final, unmark_final, "unmarked final"),
    ActionDef("clone", check_clone, clone_job, "cloned"),
    ActionDef("link", check_link, link_job, "linked"),
    ActionDef("unlink", check_unlink, unlink_job, "unlinked"),
    ActionDef("move", check_move, move_job, "moved"),
    ActionDef("delete", check_delete, delete_job, "deleted"),
    ActionDef("tag", check_tag, tag_job, "tagged"),
    ActionDef("export", check_export, export_job, "exported"),
]}

__all__ = ["ACTIONS", "PRIORITY_RANGE", "ActionContext", "ActionDef", "Refused", "clear_intermediate", "clear_job",
           "clone_chain", "clone_job", "delete_job", "describe_job", "export_job", "import_job", "kill_job",
           "link_job", "mark_complete", "mark_final", "move_job", "queue_job", "restart_job", "restart_lock", "resume_job",
           "tag_job", "unlink_job", "unmark_final", "verify_export"]
