"""The automatic chunk length, by hand (a sampled mutant of nnfun.chunks survived the fit
tests: the chunk length changes speed and responsiveness, never results)."""

from nnfun.chunks import CHUNK_SECONDS, ChunkSizer


def test_chunks_aim_at_chunk_seconds():
    sizer = ChunkSizer(None)
    assert sizer.size(100) == 1
    sizer.observe(1, 30.0)  # the first call compiles: its time says nothing
    assert sizer.size(100) == 2
    per_epoch = CHUNK_SECONDS / 5  # 5 epochs fit in CHUNK_SECONDS
    sizer.observe(2, 2 * per_epoch)
    assert sizer.size(100) == 5
    sizer.observe(5, 5 * CHUNK_SECONDS / 1000)  # fast epochs: at most 8 times the last chunk
    assert sizer.size(100) == 40
    assert sizer.size(30) == 30  # never past the epochs left
