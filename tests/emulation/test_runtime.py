"""The emulated CUDA runtime itself (csrc/cuda/emulation): synchronisation that computes
exact results, every misuse it must report, the 16-bit conversions, and the traffic counts.

The kernels are the self-tests of csrc/cuda/emulation/kernels/selftest.cpp; expected values
are computed here independently (Python integers and floats, torch's own conversions).
"""

from __future__ import annotations

import random
import struct

import pytest
import torch

from gfn_fast import _backend

pytestmark = pytest.mark.skipif(
    _backend._emulated is None, reason="gfn_fast._C_cuda_emulated is not built"
)

CUDA_ERROR_MISALIGNED_ADDRESS = 716
CUDA_ERROR_LAUNCH_FAILURE = 719
CUDA_ERROR_ILLEGAL_ADDRESS = 700


def run(name, values=(), arg=0):
    return _backend._emulated.selftest(name, [float(v) for v in values], arg)


def test_block_sum_with_barrier_is_exact():
    values = [float(i % 97) for i in range(1000)]  # integers: every order sums exactly
    result = run("block_sum", values)
    assert result["status"] == 0, result["message"]
    assert result["values"] == [float(sum(values))]
    assert result["launches"] == 1
    # Reads of the input and one 4-byte store; locals and shared memory do not count.
    assert result["bytes_read"] == 4 * len(values)
    assert result["bytes_written"] == 4
    # The 32-byte sectors they touch: the input's (one more where it starts mid-sector), one.
    assert 4 * len(values) <= result["sector_bytes_read"] <= 4 * len(values) + 64
    assert result["sector_bytes_read"] % 32 == 0
    assert result["sector_bytes_written"] == 32


def test_grid_sum_across_blocks_with_grid_sync():
    values = [float(i % 89) for i in range(3000)]
    for blocks in (1, 3, 7):
        result = run("grid_sum", values, blocks)
        assert result["status"] == 0, result["message"]
        assert result["values"] == [float(sum(values))] * (blocks * 128)
        # Every thread reads every block's slot: requested once per thread, one sector each.
        threads = blocks * 128
        assert result["bytes_read"] == 4 * len(values) + 4 * blocks * threads
        assert result["sector_bytes_read"] <= 4 * len(values) + 64 + 4 * blocks + 64


def test_shuffle_semantics_every_variant_and_width():
    lanes = list(range(32))
    for width in (32, 16, 8, 4, 2, 1):
        result = run("shuffles", lanes, width)
        assert result["status"] == 0, result["message"]
        out = [int(v) for v in result["values"]]
        rows = [out[i * 32 : (i + 1) * 32] for i in range(5)]
        for lane in range(32):
            segment = lane - lane % width
            src = (lane * 7 + 3) % 32
            assert rows[0][lane] == segment + src % width, (width, lane, "idx")
            assert rows[1][lane] == (lane if lane - 3 < segment else lane - 3), (width, lane)
            assert rows[2][lane] == (lane if lane + 5 >= segment + width else lane + 5)
            xor = lane ^ 6
            assert rows[3][lane] == (lane if xor >= segment + width else xor), (width, lane)
        if width == 32:
            assert rows[4] == [lane ^ 1 for lane in range(32)]  # 8-byte payloads


MISUSES = {
    "block_sum_without_barrier": (CUDA_ERROR_LAUNCH_FAILURE, "missing __syncthreads"),
    "barrier_in_branch": (CUDA_ERROR_LAUNCH_FAILURE, r"reached by 64 of the block's 128 threads"),
    "two_barriers": (CUDA_ERROR_LAUNCH_FAILURE, "wait at different barriers"),
    "shuffle_with_exited_lane": (CUDA_ERROR_LAUNCH_FAILURE, "names lane 16, which has exited"),
    "shuffle_mask_without_caller": (CUDA_ERROR_LAUNCH_FAILURE, "does not include the calling"),
    "shuffle_reads_outside_mask": (CUDA_ERROR_LAUNCH_FAILURE, "reads lane 16, which is not in"),
    "shuffle_against_barrier": (CUDA_ERROR_LAUNCH_FAILURE, "deadlock"),
    "shared_out_of_bounds": (CUDA_ERROR_ILLEGAL_ADDRESS, "out of bounds: element 4 of"),
    "shared_read_unwritten": (CUDA_ERROR_LAUNCH_FAILURE, "before any thread of the block wrote"),
    "shared_write_after_read": (CUDA_ERROR_LAUNCH_FAILURE, "was read by several threads"),
    "grid_sync_plain": (CUDA_ERROR_LAUNCH_FAILURE, "not launched cooperatively"),
}


@pytest.mark.parametrize("name", sorted(MISUSES))
def test_misuse_is_reported(name):
    status, message = MISUSES[name]
    result = run(name)
    assert result["status"] == status, result
    assert message.replace("\\", "") in result["message"], result["message"]
    assert result["message"].startswith("kernel "), result["message"]


def test_misaligned_vector_access_is_reported_and_aligned_copy_counts_bytes():
    values = [float(i) for i in range(1001)]
    result = run("copy_packs", values, 0)  # packs from element 0: aligned
    assert result["status"] == 0, result["message"]
    copied = (1001 // 4) * 4
    assert result["values"][:copied] == values[:copied]
    assert result["bytes_read"] == 4 * copied and result["bytes_written"] == 4 * copied
    misaligned = run("copy_packs", values, 1)
    assert misaligned["status"] == CUDA_ERROR_MISALIGNED_ADDRESS
    assert "misaligned 16-byte vector load" in misaligned["message"]


def _sample_floats(count: int, seed: int) -> list[float]:
    """Random float32 bit patterns over every exponent, plus edge cases and exact ties."""
    rng = random.Random(seed)
    values = [struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0] for _ in range(count)]
    edges = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65520.0,
        65519.99,
        6.1035156e-05,
        5.9604645e-08,
        2.9802322e-08,
        2.9802326e-08,
        1e-45,
        3.4028235e38,
        float("inf"),
        float("-inf"),
    ]
    ties = [
        struct.unpack("<f", struct.pack("<I", (rng.getrandbits(16) << 16) | 0x8000))[0]
        for _ in range(200)
    ]  # bfloat16 halfway cases
    ties += [1.0 + (2 * k + 1) * 2.0**-11 for k in range(200)]  # float16 halfway cases
    return [v for v in values + edges + ties if v == v]


@pytest.mark.parametrize(
    ("name", "dtype"), [("to_half_bits", torch.float16), ("to_bf16_bits", torch.bfloat16)]
)
def test_float_to_16_bits_rounds_like_the_cuda_intrinsics(name, dtype):
    values = _sample_floats(20000, seed=3)
    result = run(name, values)
    assert result["status"] == 0, result["message"]
    expected = torch.tensor(values, dtype=torch.float32).to(dtype).view(torch.int16)
    expected = (expected.to(torch.int64) & 0xFFFF).tolist()
    assert [int(v) for v in result["values"]] == expected
    # NaN becomes the canonical NaN 0x7fff, as cvt.rn.f16.f32 / cvt.rn.bf16.f32 give.
    nans = [float("nan"), struct.unpack("<f", struct.pack("<I", 0xFFC12345))[0]]
    assert [int(v) for v in run(name, nans)["values"]] == [0x7FFF, 0x7FFF]


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("half_bits_to_float", torch.float16), ("bf16_bits_to_float", torch.bfloat16)],
)
def test_16_bits_to_float_is_exact_for_every_pattern(name, dtype):
    patterns = list(range(65536))
    result = run(name, patterns)
    assert result["status"] == 0, result["message"]
    expected = torch.tensor(patterns, dtype=torch.int32).to(torch.int16).view(dtype).float()
    got = torch.tensor(result["values"], dtype=torch.float32)
    finite = ~torch.isnan(expected)
    assert torch.equal(got[finite], expected[finite])
    assert torch.isnan(got[~finite]).all()
