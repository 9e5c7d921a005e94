"""Specs of the built-in job types. Their run functions live in sibling modules and are
imported by the worker only."""

from __future__ import annotations

from ..model import Resources
from . import register
from .spec import InputGroupSpec, JobTypeSpec, OutputGroupSpec, ParamSpec, SlotSpec

IMPORT_PARTICLES = register(
    JobTypeSpec(
        name="import_particles",
        title="Import Particle Stack",
        category="import",
        description=(
            "Import particle images (MRC stacks) with their metadata from a RELION STAR file "
            "(3.0 or 3.1 with optics groups) or a CryoSPARC .cs file. Stacks are linked, not "
            "copied, into the job directory's imported/ folder."
        ),
        outputs=(
            OutputGroupSpec(
                name="imported_particles",
                type="particle",
                title="Imported particles",
                results=("blob", "ctf", "alignments3D"),
            ),
        ),
        params=(
            ParamSpec(name="particle_meta_path", type="path", required=True, title="Particle meta path",
                      help="RELION .star or CryoSPARC .cs file describing the particles"),
            ParamSpec(name="particle_blob_path", type="path", title="Particle data path",
                      help="directory holding the stacks when the metadata names them relative "
                           "to somewhere else (default: resolve next to the metadata file)"),
            ParamSpec(name="psize_A", type="float", min=0.01, title="Pixel size (Å)",
                      help="override the pixel size from the metadata"),
            ParamSpec(name="accel_kv", type="float", default=300.0, min=1, title="Accelerating voltage (kV)",
                      help="used when the metadata has none"),
            ParamSpec(name="cs_mm", type="float", default=2.7, min=0, title="Spherical aberration (mm)",
                      help="used when the metadata has none"),
            ParamSpec(name="amp_contrast", type="float", default=0.1, min=0, max=1, title="Amplitude contrast",
                      help="used when the metadata has none"),
            ParamSpec(name="flip_sign", type="bool", default=False, title="Flip data sign",
                      help="set when particles are dark on a light background (blob/sign = -1)"),
            ParamSpec(name="ignore_poses", type="bool", default=False, title="Ignore poses",
                      help="do not import alignments even if the metadata has them"),
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=2),
        run="cryohpc.jobtypes.imports:run_import_particles",
    )
)

IMPORT_VOLUME = register(
    JobTypeSpec(
        name="import_volume",
        title="Import 3D Volume",
        category="import",
        description="Import a map or mask from an MRC file.",
        outputs=(
            OutputGroupSpec(name="imported_volume_1", type="volume", title="Imported volume",
                            results=("map", "mask")),
        ),
        params=(
            ParamSpec(name="volume_path", type="path", required=True, title="Volume data path",
                      help="an .mrc file"),
            ParamSpec(name="volume_type", type="enum", default="map", choices=("map", "mask"),
                      title="Type of volume"),
            ParamSpec(name="psize_A", type="float", min=0.01, title="Pixel size (Å)",
                      help="override the pixel size from the MRC header"),
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=2),
        run="cryohpc.jobtypes.imports:run_import_volume",
    )
)

SUBSET_PARTICLES = register(
    JobTypeSpec(
        name="subset_particles",
        title="Particle Sets Tool (subset)",
        category="utility",
        description=(
            "Keep a subset of the connected particles: those matching a field value and/or "
            "the first N or a random N. Unused results (ctf, alignments...) pass through."
        ),
        inputs=(
            InputGroupSpec(name="particles", type="particle", title="Particles", count_max=None,
                           slots=(SlotSpec(name="blob", title="Particle data"),)),
        ),
        outputs=(
            OutputGroupSpec(name="particles", type="particle", title="Particle subset",
                            results=("blob",), passthrough_input="particles"),
        ),
        params=(
            ParamSpec(name="max_items", type="int", min=1, title="Number of particles",
                      help="keep at most this many (default: all that match)"),
            ParamSpec(name="random_seed", type="int", help="pick randomly with this seed instead of the first N"),
            ParamSpec(name="where_field", type="str", help="keep items whose field equals where_value"),
            ParamSpec(name="where_value", type="str"),
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=2),
        run="cryohpc.jobtypes.particles:run_subset_particles",
    )
)
