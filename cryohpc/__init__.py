"""cryohpc: cryo-EM processing on HPC clusters, in the spirit of CryoSPARC's master/worker design."""

__version__ = "0.1.0"
