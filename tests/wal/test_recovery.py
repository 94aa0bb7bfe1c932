from tests.wal.helpers import read_all, sample_frames
from tests.wal.test_reader import _open_segment_with_batches
from wal import SegmentReader, WalWriter, recover_directory
from wal.naming import TORN_DIR, list_segments


def test_recovery_seals_every_truncation_of_the_last_frame(tmp_path):
    batches = [sample_frames(20), sample_frames(30, conn=1)]
    source = tmp_path / "src"
    source.mkdir()
    path, ends = _open_segment_with_batches(source, batches)
    full = path.read_bytes()
    for cut in range(ends[-2], ends[-1]):
        work = tmp_path / f"cut{cut}"
        work.mkdir()
        (work / path.name).write_bytes(full[:cut])
        [report] = recover_directory(work)
        assert report.truncated_bytes == cut - ends[-2]
        recs = read_all(report.sealed_path)  # sealed: the strict reader must accept it
        assert [r["type"] for r in recs[1:-1]] == ["frame"] * 20
        assert recs[-1]["recovered"] is True
        assert recs[-1]["truncated_bytes"] == cut - ends[-2]
        assert recs[-1]["records"] == 22 and recs[-1]["frames"] == 20
        torn = list((work / TORN_DIR).glob("*.torn"))
        assert [t.read_bytes() for t in torn] == ([full[ends[-2] : cut]] if cut > ends[-2] else [])


def test_recovery_of_a_file_with_no_complete_frame_writes_a_header(tmp_path):
    path, ends = _open_segment_with_batches(tmp_path, [])
    path.write_bytes(path.read_bytes()[: ends[0] - 1])
    [report] = recover_directory(tmp_path)
    recs = read_all(report.sealed_path)
    assert [r["type"] for r in recs] == ["segment", "seal"]
    assert recs[0]["seq"] == 0


def test_recovery_only_renames_a_segment_that_already_has_its_seal(tmp_path):
    writer = WalWriter.open(tmp_path)
    writer.append(sample_frames(1)[0])
    assert writer.close(10)
    [sealed] = tmp_path.glob("*.jsonl.zst")
    sealed.rename(sealed.with_name(sealed.name + ".open"))  # crash between seal and rename
    [report] = recover_directory(tmp_path)
    assert report.was_complete and report.sealed_path == sealed
    assert [r["type"] for r in read_all(sealed)] == ["segment", "frame", "seal"]


def test_writer_recovers_then_continues_the_sequence(tmp_path):
    batches = [sample_frames(5)]
    path, _ends = _open_segment_with_batches(tmp_path, batches)
    path.write_bytes(path.read_bytes()[:-2])
    writer = WalWriter.open(tmp_path)
    assert len(writer.stats.recovered) == 1
    writer.append(sample_frames(1)[0])
    assert writer.close(10)
    names = [(n.seq, n.is_open) for n, _ in list_segments(tmp_path)]
    assert names == [(0, False), (1, False)]
    for _, p in list_segments(tmp_path):
        list(SegmentReader(p).records())
