"""Specs of the built-in job types. Their run functions live in sibling modules and are
imported by the worker only."""

from __future__ import annotations

from ..resources import Resources
from . import register
from .spec import InputGroupSpec, JobTypeSpec, OutputGroupSpec, ParamSpec, SlotSpec

# the input of particle utilities: any number of particle groups, their images at least
PARTICLES_IN = InputGroupSpec(name="particles", type="particle", title="Particles", count_max=None,
                              slots=(SlotSpec(name="blob", title="Particle data"),))

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
        run_on_master=True,
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
        run_on_master=True,
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
        inputs=(PARTICLES_IN,),
        outputs=(
            OutputGroupSpec(name="particles", type="particle", title="Particle subset",
                            results=("blob",), passthrough_input="particles"),
        ),
        params=(
            ParamSpec(name="max_items", type="int", min=1, title="Number of particles",
                      help="keep at most this many (default: all that match)"),
            ParamSpec(name="random_seed", type="int", min=0, help="pick randomly with this seed instead of the first N"),
            ParamSpec(name="where_field", type="str", help="keep items whose field equals where_value"),
            ParamSpec(name="where_value", type="str"),
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=2),
        run="cryohpc.jobtypes.particles:run_subset_particles",
        preprocessing="deterministic",
    )
)

SELECT_CLASSES = register(
    JobTypeSpec(
        name="select_classes",
        title="Select Classes",
        category="utility",
        description=(
            "Keep the particles of chosen classes from a 2D or 3D classification (alignments2D/class or "
            "alignments3D/class). Classes are numbered from 1, as RELION names its class files. Every "
            "result passes through."
        ),
        inputs=(PARTICLES_IN.model_copy(update={"title": "Classified particles"}),),
        outputs=(
            OutputGroupSpec(name="particles", type="particle", title="Selected particles",
                            passthrough_input="particles"),
        ),
        params=(
            ParamSpec(name="classes", type="str", required=True, title="Classes to keep",
                      help="class numbers from 1 and ranges, e.g. 1,3,5-7", pattern=r"[\d,\s-]+",
                      pattern_help="class numbers and ranges, e.g. 1,3,5-7"),
            ParamSpec(name="class_field", type="enum", default="auto", choices=("auto", "alignments2D", "alignments3D"),
                      title="Classification to select by",
                      help="auto: the classes the connected job wrote (not ones it passed through)"),
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=2),
        run="cryohpc.jobtypes.particles:run_select_classes",
        preprocessing="deterministic",
    )
)


COMPUTE_PARAMS = (
    ParamSpec(name="compute_num_ranks", type="int", default=1, min=1, title="Number of MPI ranks",
              help="processes sharing the particles (one per GPU when GPUs are used)"),
    ParamSpec(name="compute_num_gpus", type="int", default=0, min=0, title="Number of GPUs",
              help="GPUs to use (0: CPUs only); ranks are spread over them"),
    ParamSpec(name="compute_num_nodes", type="int", default=1, min=1, title="Number of nodes",
              help="cluster lanes: machines the ranks are spread over (ranks and GPUs divided evenly)"),
    ParamSpec(name="compute_share_gpus", type="bool", default=False, title="Ranks may share GPUs",
              help="let a node's ranks take turns on fewer GPUs than ranks (each rank needs its own "
                   "share of the GPU's memory); off, such a job stops at once"),
)
SYMMETRY_PATTERN = {"pattern": r"[CcDd][1-9]\d*", "pattern_help": "use C<n> or D<n>, e.g. C1, C4, D2"}
COMPUTE_RESOURCES = {"mpi_ranks": "compute_num_ranks", "gpus": "compute_num_gpus", "nodes": "compute_num_nodes"}

SIMULATE_PARTICLES = register(
    JobTypeSpec(
        name="simulate_particles",
        title="Simulate Particles",
        category="utility",
        description=(
            "Project a volume (a connected one, or a built-in phantom) at uniformly random poses "
            "with shifts, per-particle defocus and astigmatism, CTF and Gaussian noise at a given "
            "SNR. Writes MRC stacks and particles with their true alignments and CTF."
        ),
        inputs=(
            InputGroupSpec(name="volume", type="volume", title="Volume to project", count_min=0, count_max=1,
                           slots=(SlotSpec(name="map", title="Map"),)),
        ),
        outputs=(
            OutputGroupSpec(name="particles", type="particle", title="Simulated particles",
                            results=("blob", "ctf", "alignments3D")),
            OutputGroupSpec(name="true_volume", type="volume", title="Volume projected", results=("map",)),
        ),
        params=(
            ParamSpec(name="n_particles", type="int", default=2000, min=1, title="Number of particles"),
            ParamSpec(name="box", type="int", default=64, min=16, max=1024, title="Box size (px)",
                      help="of the phantom; a connected volume keeps its own"),
            ParamSpec(name="psize_A", type="float", default=1.5, min=0.1, title="Pixel size (Å)",
                      help="of the phantom; a connected volume keeps its own"),
            ParamSpec(name="phantom_symmetry", type="str", default="C1", title="Phantom symmetry",
                      help="C<n> or D<n>", **SYMMETRY_PATTERN),
            ParamSpec(name="snr", type="float", default=0.1, min=0, title="Signal-to-noise ratio",
                      help="variance of the projections over that of the noise; 0 = no noise"),
            ParamSpec(name="ctf", type="bool", default=True, title="Apply CTF"),
            ParamSpec(name="defocus_min_A", type="float", default=10000.0, min=0, title="Minimum defocus (Å)"),
            ParamSpec(name="defocus_max_A", type="float", default=25000.0, min=0, title="Maximum defocus (Å)"),
            ParamSpec(name="astigmatism_A", type="float", default=300.0, min=0, title="Astigmatism (Å)",
                      help="largest |df1 - df2|"),
            ParamSpec(name="shift_sigma_px", type="float", default=2.0, min=0, title="Shift spread (px)"),
            ParamSpec(name="accel_kv", type="float", default=300.0, min=1, title="Voltage (kV)"),
            ParamSpec(name="cs_mm", type="float", default=2.7, min=0, title="Spherical aberration (mm)"),
            ParamSpec(name="amp_contrast", type="float", default=0.1, min=0, max=1, title="Amplitude contrast"),
            ParamSpec(name="particles_per_stack", type="int", default=1000, min=1),
            ParamSpec(name="seed", type="int", default=0, min=0, title="Random seed"),
            COMPUTE_PARAMS[1],
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=4),
        resource_params={"gpus": "compute_num_gpus"},
        run="cryohpc.jobtypes.simulate:run_simulate_particles",
        preprocessing="extraction",  # its seed makes the same stacks again
    )
)

HOMO_RECONSTRUCT = register(
    JobTypeSpec(
        name="homo_reconstruct",
        title="Homogeneous Reconstruction Only",
        category="reconstruction",
        description=(
            "Reconstruct half maps (by alignments3D/split) and a full map from particles with "
            "poses and CTF by direct Fourier inversion, with optional symmetry; FSC between the "
            "half maps. Runs as an MPI program, each rank on its own GPU or CPU core."
        ),
        inputs=(
            InputGroupSpec(name="particles", type="particle", title="Particles", count_max=None,
                           slots=(SlotSpec(name="blob", title="Particle data"),
                                  SlotSpec(name="alignments3D", title="3D alignments"),
                                  SlotSpec(name="ctf", title="CTF", required=False))),
        ),
        outputs=(
            OutputGroupSpec(name="volume", type="volume", title="Volume",
                            results=("map", "map_half_A", "map_half_B")),
            OutputGroupSpec(name="particles", type="particle", title="Particles", passthrough_input="particles"),
        ),
        params=(
            ParamSpec(name="symmetry", type="str", default="C1", title="Symmetry", help="C<n> or D<n>",
                      **SYMMETRY_PATTERN),
            ParamSpec(name="padding_factor", type="int", default=2, min=1, max=4, title="Padding factor",
                      help="oversampling of the Fourier grid (2 as RELION)"),
            ParamSpec(name="wiener_constant", type="float", default=1e-3, min=0, title="Regularisation",
                      help="added to the weights, as a fraction of their median (with gridding iterations: "
                           "no weight is raised beyond 1 / this)"),
            ParamSpec(name="gridding_iterations", type="int", default=10, min=0, max=100,
                      title="Gridding-correction iterations",
                      help="iterative estimation of the Fourier sampling weights, as RELION's --iter "
                           "(10 as RELION); 0 divides by the weights directly"),
            ParamSpec(name="ignore_ctf", type="bool", default=False, title="Ignore CTF"),
            ParamSpec(name="batch_size", type="int", default=128, min=1, title="Particles per batch",
                      help="images read and inserted at once; a GPU takes at least 2048 (fewer where "
                           "2048 images exceed 256 MB)"),
            ParamSpec(name="checkpoint_every_s", type="float", default=300.0, min=0, title="Checkpoint period (s)",
                      help="save partial sums this often so a killed job resumes (0 = never)"),
            ParamSpec(name="compute_use_ssd", type="bool", default=True, title="Cache particle images on SSD",
                      help="read stacks through the lane's SSD cache, when it has one"),
            *COMPUTE_PARAMS,
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=8),
        resource_params=COMPUTE_RESOURCES,
        run="cryohpc.jobtypes.reconstruct:run_homo_reconstruct",
    )
)

VALIDATE_FSC = register(
    JobTypeSpec(
        name="validate_fsc",
        title="Validation (FSC)",
        category="validation",
        description="FSC between two half maps, or between a map and a reference map: curve, "
                    "resolutions at 0.143 and 0.5, plot and EMDB XML.",
        inputs=(
            InputGroupSpec(name="volume", type="volume", title="Volume",
                           slots=(SlotSpec(name="map_half_A", title="Half map A", required=False),
                                  SlotSpec(name="map_half_B", title="Half map B", required=False),
                                  SlotSpec(name="map", title="Map", required=False))),
            InputGroupSpec(name="reference", type="volume", title="Reference", count_min=0, count_max=1,
                           slots=(SlotSpec(name="map", title="Reference map"),)),
        ),
        outputs=(
            OutputGroupSpec(name="volume", type="volume", title="Volume validated", passthrough_input="volume"),
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=4),
        run="cryohpc.jobtypes.validation:run_validate_fsc",
    )
)

CACHE_PARTICLES = register(
    JobTypeSpec(
        name="cache_particles",
        title="Cache Particles on SSD",
        category="utility",
        description="Copy the connected particles' stacks into the lane's SSD cache ahead of the jobs that "
                    "read them, without holding a GPU. Passes the particles through.",
        inputs=(PARTICLES_IN,),
        outputs=(
            OutputGroupSpec(name="particles", type="particle", title="Particles", passthrough_input="particles"),
        ),
        resources=Resources(cpus=2, gpus=0, ram_gb=1),
        run="cryohpc.jobtypes.particles:run_cache_particles",
        preprocessing="deterministic",
    )
)


STACK_PARAMS = (
    ParamSpec(name="particles_per_stack", type="int", default=1000, min=1, title="Particles per stack file"),
    ParamSpec(name="compute_use_ssd", type="bool", default=True, title="Cache particle images on SSD",
              help="read stacks through the lane's SSD cache, when it has one"),
    COMPUTE_PARAMS[0],
)
RESTACK_PARTICLES = register(
    JobTypeSpec(
        name="restack_particles",
        title="Restack Particles",
        category="utility",
        description="Write new stacks holding only the connected particles, in their order, and point blob/path "
                    "and blob/idx at them (every other field passes through). The job that wrote the original "
                    "stacks can then be cleared. Runs under MPI, reading through the SSD cache.",
        inputs=(PARTICLES_IN,),
        outputs=(OutputGroupSpec(name="particles", type="particle", title="Restacked particles",
                                 results=("blob",), passthrough_input="particles"),),
        params=STACK_PARAMS,
        resources=Resources(cpus=1, gpus=0, ram_gb=4),
        resource_params={"mpi_ranks": "compute_num_ranks"},
        run="cryohpc.jobtypes.stacks:run_restack_particles",
        preprocessing="extraction",
    )
)

DOWNSAMPLE_PARTICLES = register(
    JobTypeSpec(
        name="downsample_particles",
        title="Downsample Particles",
        category="utility",
        description="Fourier-crop (or pad) the connected particles to a new box: new stacks, blob/shape and "
                    "blob/psize_A updated (CTF values are in Å and stay; pixel shifts get alignments3D/psize_A), "
                    "optionally as float16. Also consolidates a subset into stacks of its own. Runs under MPI, "
                    "reading through the SSD cache.",
        inputs=(PARTICLES_IN,),
        outputs=(OutputGroupSpec(name="particles", type="particle", title="Downsampled particles",
                                 results=("blob", "alignments3D"), passthrough_input="particles"),),
        params=(
            ParamSpec(name="new_box", type="int", required=True, min=8, max=4096, title="New box size (px)",
                      help="even; smaller crops the spectrum (coarser pixels), larger pads it"),
            ParamSpec(name="output_f16", type="bool", default=False, title="Write float16 stacks",
                      help="half the disk; about 3 significant digits per pixel"),
            *STACK_PARAMS,
        ),
        resources=Resources(cpus=1, gpus=0, ram_gb=4),
        resource_params={"mpi_ranks": "compute_num_ranks"},
        run="cryohpc.jobtypes.stacks:run_downsample_particles",
        preprocessing="extraction",
    )
)

LANE_PROBE = register(
    JobTypeSpec(
        name="lane_probe",
        title="Lane Probe",
        category="utility",
        description=(
            "Report what a job sees where a lane runs it: each MPI rank's host, GPUs and SSD cache "
            "path (checked writable), written to probe.json. 'cryohpc lane test --submit' runs it."
        ),
        params=COMPUTE_PARAMS,
        resources=Resources(cpus=1, gpus=0, ram_gb=1),
        resource_params=COMPUTE_RESOURCES,
        run="cryohpc.jobtypes.probe:run_lane_probe",
        intermediate=(),
    )
)
