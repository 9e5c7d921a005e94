"""What a GPU reconstruction needs, decided before any GPU work: device memory per rank
and batch sizes. No CuPy here, so the rules are checked (and tested) anywhere."""

from __future__ import annotations

from .backproject import CHANNELS, grid_with_margin

GB = 1e9
GPU_BATCH = 2048  # particles a GPU inserts at once at least: slab passes pay off over large batches
GPU_BATCH_BYTES = 256 << 20  # ... unless that many images take more than this


def gpu_batch_size(box: int, asked: int) -> int:
    """Batch size on a GPU: the one asked for, raised to GPU_BATCH particles where their
    images fit in GPU_BATCH_BYTES (on an H100 a box 128 batch of 2048 inserts 1.6x faster
    than one of 256)."""
    return max(asked, min(GPU_BATCH, GPU_BATCH_BYTES // (box * box * 4)))


def accumulator_bytes(box: int, pad: int) -> int:
    """The two half-set accumulators of a reconstruction (16-byte voxels, with margins): the
    memory a rank holds whatever else it does."""
    m = grid_with_margin(pad * box)
    return 2 * m**3 * CHANNELS * 4


def device_bytes_needed(box: int, pad: int, batch: int, finishing: bool = True) -> int:
    """Peak device memory of one rank: the two half-set accumulators, two batches in flight
    (images and spectra), and on the rank that finishes the finishing grids, with 5 % slack
    for the pool. Measured on an H100, box 512, padding 2: 53.4 GB against 60.3 estimated."""
    g = pad * box
    acc = accumulator_bytes(box, pad)
    batches = 2 * batch * (box * box * 4 + box * (box // 2 + 1) * 8)
    # complex data 8 + weights 4 + mask 1 + positive weights and the median's copy 8 per voxel
    finish = 21 * g**3 if finishing else 0
    return int(1.05 * (acc + batches + finish))


def memory_refusal(box: int, pad: int, batch: int, devices: list[int], rank: int, free: int, total: int) -> str | None:
    """Why rank ``rank`` cannot run (None if it can): ``devices`` lists each rank's GPU,
    ``free``/``total`` are this rank's GPU's bytes before any rank allocated. Every rank on
    a GPU holds its own accumulators; rank 0 also finishes. Only the first rank on a GPU
    judges by free memory (later ones may already see the first one's allocations)."""
    device = devices[rank]
    on_gpu = devices.count(device)
    need = device_bytes_needed(box, pad, batch, finishing=False) * on_gpu
    if devices[0] == device:
        need += device_bytes_needed(box, pad, batch) - device_bytes_needed(box, pad, batch, finishing=False)
    first_on_gpu = devices.index(device) == rank
    if need <= total and (not first_on_gpu or need <= free):
        return None
    return (f"box {box} at padding {pad} with {on_gpu} rank(s) on GPU {device} needs {need / GB:.1f} GB of GPU "
            f"memory; the GPU has {total / GB:.1f} GB ({free / GB:.1f} GB free). Use fewer ranks per GPU, "
            "padding_factor 1, or compute_num_gpus=0 (CPU)")
