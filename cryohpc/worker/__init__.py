"""The compute side: runs a job from its ``job.json`` alone, never opening the database."""
