import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from tests.timeouts import TIMEOUT_S, scaled
from tests.wal.helpers import FAST, read_all, sample_frames, write_segment
from wal import CorruptSegmentError, Policy, SegmentChangedError, SegmentReader, WalError, records
from wal.fsutil import REAL_OPS
from wal.naming import make_name
from wal.reader import READ_WINDOW, SegmentFile
from wal.segment import OpenSegment, compressor

NS = 1_795_478_764_000_000_000

# Any Unicode, lone surrogates included: st.text() leaves out category Cs by default, and
# even with it allowed they are rare, so half the strings are built to contain some.
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(st.characters(codec=None, exclude_categories=())) | st.lists(
    surrogate | st.characters(), min_size=1
).map("".join)
messages = st.one_of(
    any_text,
    st.binary(max_size=2048),
    st.builds(lambda s: '{"event_type":"book","x":"' + s + '"}', any_text),
)
conns = st.integers(0, 5)
record_lists = st.lists(
    st.builds(lambda c, m: records.frame(NS, c, 0, m), conns, messages)
    | st.builds(records.sent, st.just(NS), conns, any_text)
    | st.builds(records.conn_open, st.just(NS), conns, any_text)
    | st.builds(
        records.conn_close,
        st.just(NS),
        conns,
        any_text,
        st.none() | st.integers(1000, 4999),
        any_text,
        st.none() | any_text,
    )
    | st.builds(
        records.stall,
        st.just(NS),
        conns,
        st.sampled_from(["no_pong", "no_data"]),
        st.floats(0, 1e6),
    )
    | st.builds(records.dropped, st.just(NS), st.integers(1, 10**9), any_text),
    max_size=60,
)


def _as_json_reads_it(value):
    """JSON strings are UTF-16: a str holding a high and a low surrogate next to each
    other is, once written, the one character they encode. Lone surrogates stay as they
    are. (A WebSocket text frame, valid UTF-8, never holds either.)"""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, dict):
        return {k: _as_json_reads_it(v) for k, v in value.items()}
    return value


def test_surrogate_pairs_read_back_as_their_character_lone_ones_unchanged(tmp_path):
    recs = [records.frame(NS, 0, 0, "\ud800\udc00"), records.frame(NS, 0, 1, "a\udc00\ud800")]
    body = read_all(write_segment(tmp_path, recs))[1:-1]
    assert [r["text"] for r in body] == ["\U00010000", "a\udc00\ud800"]


def test_the_text_strategy_produces_lone_surrogates():
    def has_surrogate(text: str) -> bool:
        return any(0xD800 <= ord(c) <= 0xDFFF for c in text)

    found = find(any_text, has_surrogate, settings=settings(database=None, derandomize=True))
    assert has_surrogate(found)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(recs=record_lists)
def test_any_records_come_back_identical_with_offsets(tmp_path_factory, recs):
    directory = tmp_path_factory.mktemp("wal")
    path = write_segment(directory, recs, Policy(flush_ms=0, batch_bytes=512, rotate_s=3600))
    got = list(SegmentReader(path).records())
    assert got[0][1]["type"] == "segment" and got[-1][1]["type"] == "seal"
    body = [r for _, r in got[1:-1]]
    assert body == [_as_json_reads_it(r) for r in recs]
    for offset, _record in got:  # every offset is the start of the frame holding the record
        first_of_frame = [r for o, r in got if o == offset]
        assert next(SegmentReader(path).records(offset))[1] == first_of_frame[0]
    assert got[-1][1]["frames"] == sum(1 for r in recs if r["type"] == "frame")
    assert got[-1][1]["records"] == len(got)


def test_huge_frames_round_trip(tmp_path):
    huge_text = "x" * (8 << 20)
    huge_bin = bytes(range(256)) * (32 << 10)  # 8 MiB
    recs = [records.frame(NS, 0, 0, huge_text), records.frame(NS, 0, 1, huge_bin)]
    path = write_segment(tmp_path, recs, Policy(flush_ms=1, batch_bytes=1 << 20, rotate_s=3600))
    body = read_all(path)[1:-1]
    assert body[0]["text"] == huge_text
    assert records.frame_payload(body[1]) == huge_bin


def test_reading_from_an_offset_starts_at_that_frame(tmp_path):
    path = write_segment(tmp_path, sample_frames(500), Policy(flush_ms=0, batch_bytes=1000))
    batches = list(SegmentReader(path).batches())
    assert len(batches) > 5
    middle = batches[3]
    again = list(SegmentReader(path).batches(middle.offset))
    assert again[0].lines == middle.lines
    assert [b.end for b in again] == [b.end for b in batches[3:]]


def _open_segment_with_batches(directory, batches):
    """Write an .open segment of header + batches by hand; return (path, frame ends)."""
    name = make_name(0, NS, is_open=True)
    seg = OpenSegment.create(directory, name, REAL_OPS)
    cctx = compressor(3)
    ends = []
    header = records.encode_record(records.segment_header(0, NS, "test"))
    seg.append_frame(cctx.compress(header), 1, 0)
    ends.append(seg.size)
    for batch in batches:
        data = b"".join(records.encode_record(r) for r in batch)
        seg.append_frame(cctx.compress(data), len(batch), len(batch))
        ends.append(seg.size)
    seg.close()
    return seg.path, ends


def test_reader_stops_at_truncated_frame_at_every_byte(tmp_path):
    batches = [sample_frames(20), sample_frames(30, conn=1)]
    path, ends = _open_segment_with_batches(tmp_path, batches)
    full = path.read_bytes()
    for cut in range(ends[-2], ends[-1]):
        path.write_bytes(full[:cut])
        reader = SegmentReader(path)
        got = [r for _, r in reader.records()]
        assert len(got) == 1 + 20, cut
        assert reader.valid_end == ends[-2]
        assert (reader.torn_cause is None) == (cut == ends[-2])


def test_sealed_segment_that_is_truncated_is_corrupt(tmp_path):
    path = write_segment(tmp_path, sample_frames(50))
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(CorruptSegmentError) as err:
        read_all(path)
    assert err.value.path == path and "incomplete" in err.value.cause


def test_sealed_segment_cut_at_frame_boundary_misses_seal(tmp_path):
    path = write_segment(tmp_path, sample_frames(50), Policy(flush_ms=0, batch_bytes=200))
    batches = list(SegmentReader(path).batches())
    path.write_bytes(path.read_bytes()[: batches[-2].end])
    with pytest.raises(CorruptSegmentError, match="seal"):
        read_all(path)


def test_missing_header_is_corrupt(tmp_path):
    _path, _ = _open_segment_with_batches(tmp_path, [sample_frames(3)])
    cctx = compressor(3)
    sealed = tmp_path / "000000000001-20261124T000604Z.jsonl.zst"
    sealed.write_bytes(cctx.compress(records.encode_record(records.frame(1, 0, 0, "x"))))
    with pytest.raises(CorruptSegmentError, match="missing segment header") as err:
        read_all(sealed)
    assert err.value.offset == 0


def test_empty_sealed_file_is_corrupt(tmp_path):
    empty = tmp_path / "000000000001-20261124T000604Z.jsonl.zst"
    empty.write_bytes(b"")
    with pytest.raises(CorruptSegmentError, match="empty"):
        read_all(empty)


def test_bad_json_line_is_corrupt_at_its_frame(tmp_path):
    path = write_segment(tmp_path, sample_frames(5), FAST)
    end = next(iter(SegmentReader(path).batches())).end
    bad = compressor(3).compress(b'{"type":"frame","text":\n')
    data = path.read_bytes()
    path.write_bytes(data[:end] + bad + data[end:])
    with pytest.raises(CorruptSegmentError, match="not a record") as err:
        read_all(path)
    assert err.value.offset == end


def test_invalid_utf8_line_is_corrupt(tmp_path):
    path = write_segment(tmp_path, sample_frames(5), FAST)
    end = next(iter(SegmentReader(path).batches())).end
    bad = compressor(3).compress(b'{"type":"frame","text":"\xff"}\n')
    data = path.read_bytes()
    path.write_bytes(data[:end] + bad + data[end:])
    with pytest.raises(CorruptSegmentError) as err:
        read_all(path)
    assert err.value.offset == end


def test_frame_without_checksum_is_corrupt(tmp_path):
    path = write_segment(tmp_path, sample_frames(5), FAST)
    end = next(iter(SegmentReader(path).batches())).end
    import zstandard

    plain = zstandard.ZstdCompressor(write_checksum=False).compress(b'{"type":"x"}\n')
    data = path.read_bytes()
    path.write_bytes(data[:end] + plain + data[end:])
    with pytest.raises(CorruptSegmentError, match="checksum") as err:
        read_all(path)
    assert err.value.offset == end


def _segment_of_batches(directory, count=40, per_batch=50):
    return write_segment(
        directory, sample_frames(count * per_batch), Policy(flush_ms=0, batch_bytes=2000)
    )


def test_a_file_that_shrinks_while_read_raises_changed_naming_file_and_offset(tmp_path):
    path = _segment_of_batches(tmp_path)
    batches = SegmentReader(path).batches()
    first = next(batches)
    os.truncate(path, first.end + 10)
    with pytest.raises(SegmentChangedError) as err:
        list(batches)
    assert err.value.path == path and err.value.offset >= first.end
    assert "changed while it was read" in str(err.value) and "shrank" in str(err.value)
    assert not isinstance(err.value, CorruptSegmentError)


def test_a_sealed_file_rewritten_while_read_is_changed_not_corrupt(tmp_path):
    path = _segment_of_batches(tmp_path)
    data = path.read_bytes()
    batches = SegmentReader(path).batches()
    next(batches)
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # as if a restore were half way through copying
    with open(path, "r+b") as f:
        f.write(damaged)
    os.utime(path, ns=(0, 12345))
    with pytest.raises(SegmentChangedError, match="rewritten"):
        list(batches)


def test_a_read_error_propagates_as_oserror_not_as_corruption(tmp_path):
    not_a_file = tmp_path / "000000000001-20261124T000604Z.jsonl.zst"
    not_a_file.mkdir()  # opens, then every read fails with EISDIR
    with pytest.raises(OSError) as err:
        SegmentFile(not_a_file).read(0, 10)
    assert not isinstance(err.value, WalError)


def test_the_reader_holds_one_frame_not_the_file(tmp_path):
    path = _segment_of_batches(tmp_path)
    reads = []
    f = SegmentFile(path)
    original = f._pread
    f._pread = lambda offset, count: reads.append(count) or original(offset, count)
    batches = list(SegmentReader(path)._walk(f, 0))
    f.close()
    assert len(batches) > 30 and max(reads) <= max(
        READ_WINDOW, *(b.end - b.offset for b in batches)
    )


TRUNCATE_LOOP = """
import os, sys, time
path, data = sys.argv[1], open(sys.argv[1], "rb").read()
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    with open(path, "r+b") as f:  # what `cp backup path` does: truncate, then write
        f.truncate(0)
        f.write(data[: len(data) // 3])
        f.flush()
        f.write(data[len(data) // 3 :])
"""


def test_a_file_truncated_by_another_process_while_read_never_kills_the_reader(tmp_path):
    path = write_segment(
        tmp_path, sample_frames(20_000), Policy(flush_ms=0, batch_bytes=4096, rotate_s=3600)
    )
    writer = subprocess.Popen([sys.executable, "-c", TRUNCATE_LOOP, str(path), str(scaled(3))])
    outcomes = set()
    try:
        while writer.poll() is None:
            done = subprocess.run(
                [sys.executable, "-m", "wal.cli", "verify", str(path)],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S * 3,
            )
            assert done.returncode in (0, 1), done  # never a signal (mmap: SIGBUS, 135)
            assert "Traceback" not in done.stderr, done.stderr
            outcomes.add(done.returncode)
    finally:
        writer.wait(timeout=TIMEOUT_S)
    assert writer.returncode == 0
