"""The GPU budget a reconstruction is judged by before it starts (no GPU needed): what
fits is run, what does not is refused with the figures a user needs to choose again."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.compute.gpu_budget import GB, device_bytes_needed, gpu_batch_size, memory_refusal

H100 = int(85.0e9)  # what an 80 GB H100 reports as total


def test_box_512_at_padding_2_fits_an_80_gb_gpu_with_one_rank_but_not_two():
    batch = gpu_batch_size(512, 128)
    assert memory_refusal(512, 2, batch, [0], 0, free=H100 - (1 << 30), total=H100) is None
    refusal = memory_refusal(512, 2, batch, [0, 0], 0, free=H100 - (1 << 30), total=H100)
    assert refusal is not None
    assert "box 512 at padding 2 with 2 rank(s) on GPU 0 needs" in refusal and "85.0 GB" in refusal
    assert "fewer ranks per GPU" in refusal and "compute_num_gpus=0" in refusal


def test_the_estimate_covers_what_was_measured():
    # H100, box 512, padding 2, one rank inserting 32 particles then finishing: 53.4 GB peak
    assert 53.4e9 <= device_bytes_needed(512, 2, 32) <= 1.2 * 53.4e9


@settings(max_examples=200, deadline=None)
@given(box=st.sampled_from([32, 64, 128, 256, 384, 512]), pad=st.integers(1, 3),
       devices=st.lists(st.integers(0, 3), min_size=1, max_size=8), data=st.data())
def test_refusals_follow_the_need_of_every_rank_on_the_gpu(box, pad, devices, data):
    rank = data.draw(st.integers(0, len(devices) - 1))
    total = data.draw(st.integers(1, 200)) * GB
    free = data.draw(st.integers(0, int(total // GB))) * GB
    batch = gpu_batch_size(box, 128)
    refusal = memory_refusal(box, pad, batch, devices, rank, free, total)
    on_gpu = devices.count(devices[rank])
    need = device_bytes_needed(box, pad, batch, finishing=devices[0] == devices[rank]) \
        + (on_gpu - 1) * device_bytes_needed(box, pad, batch, finishing=False)
    first = devices.index(devices[rank]) == rank
    assert (refusal is None) == (need <= total and (need <= free or not first))
    if refusal:
        assert f"GPU {devices[rank]} needs {need / GB:.1f} GB" in refusal and f"{on_gpu} rank(s)" in refusal


@given(box=st.integers(8, 1024).map(lambda b: 2 * (b // 2)), asked=st.integers(1, 100_000))
def test_a_gpu_batch_is_never_smaller_than_asked_and_large_where_it_fits(box, asked):
    b, image = gpu_batch_size(box, asked), box * box * 4
    assert b >= asked
    if b > asked:  # raised only within the byte cap
        assert b * image <= 256 << 20
    if 2048 * image <= 256 << 20:  # where 2048 images fit, a GPU gets at least that many
        assert b >= 2048
