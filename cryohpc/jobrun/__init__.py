"""What a job type's ``run`` function works with on the node: the run context (params,
inputs, outputs, progress), MPI helpers and checkpoints. Imported by job types and by the
worker, importing neither, so neither imports the other through it."""
