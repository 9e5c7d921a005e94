"""The master's work in rooms: ``placement`` (pure decisions), ``launching`` (two-phase
launch), ``following`` (polls and events), ``job_events`` (events applied to a job),
``kills`` (kills retried), ``lane_set`` (site-config reloads, target states),
``job_reader`` (jobs re-read by revision), and ``step`` (one pass over all of them)."""

from .step import Scheduler

__all__ = ["Scheduler"]
