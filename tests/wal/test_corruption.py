"""Flip each byte of a sealed segment: the reader and `wal verify` must notice, at the
right frame's offset."""

from click.testing import CliRunner

from tests.wal.helpers import read_all, sample_frames, write_segment
from wal import CorruptSegmentError, Policy, SegmentReader
from wal.cli import main


def test_every_flipped_byte_is_reported_at_its_frame(tmp_path):
    path = write_segment(tmp_path, sample_frames(40), Policy(flush_ms=0, batch_bytes=300))
    original = path.read_bytes()
    expected = read_all(path)
    frames = [(b.offset, b.end) for b in SegmentReader(path).batches()]
    undetected = []
    for pos in range(len(original)):
        damaged = bytearray(original)
        damaged[pos] ^= 0x5A
        path.write_bytes(bytes(damaged))
        frame_start = next(start for start, end in frames if start <= pos < end)
        try:
            got = read_all(path)
        except CorruptSegmentError as exc:
            assert exc.offset == frame_start, (pos, exc)
            assert exc.path == path
            verify = CliRunner().invoke(main, ["verify", str(tmp_path)])
            assert verify.exit_code == 1
            assert f"CORRUPT {path} at byte offset {frame_start}: " in verify.output, pos
            continue
        assert got == expected, f"flip at byte {pos} changed data without an error"
        undetected.append(pos)
    # Only bytes that do not affect the data (e.g. a frame's window-size hint) may pass.
    assert len(undetected) <= len(frames), undetected
