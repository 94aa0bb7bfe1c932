import json

from click.testing import CliRunner

from tests.wal.helpers import sample_frames, write_segment
from wal.cli import main


def test_ls_lists_segments_with_counts(tmp_path):
    write_segment(tmp_path, sample_frames(7))
    result = CliRunner().invoke(main, ["ls", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    [info] = [json.loads(line) for line in result.output.splitlines()]
    assert info["state"] == "sealed" and info["frames"] == 7 and info["records"] == 9
    assert info["error"] is None


def test_cat_filters_by_type_and_starts_at_offset(tmp_path):
    path = write_segment(tmp_path, sample_frames(3))
    result = CliRunner().invoke(main, ["cat", str(path), "--type", "frame", "--offsets"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 3
    offset = int(lines[0].split("\t")[0])
    assert json.loads(lines[0].split("\t")[1])["n"] == 0
    again = CliRunner().invoke(main, ["cat", str(path), "--from-offset", str(offset)])
    assert json.loads(again.output.splitlines()[0])["type"] == "frame"


def test_verify_passes_intact_and_reports_damage_with_offset(tmp_path):
    path = write_segment(tmp_path, sample_frames(50))
    ok = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert ok.exit_code == 0 and "1 segments intact, 0 corrupt" in ok.output
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = CliRunner().invoke(main, ["verify", str(path)])
    assert bad.exit_code == 1
    assert f"CORRUPT {path} at byte offset" in bad.output


def test_verify_rejects_a_file_that_is_not_a_segment(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    result = CliRunner().invoke(main, ["verify", str(other)])
    assert result.exit_code == 1 and "is not a segment name" in result.output


def test_cat_of_corrupt_segment_exits_1_with_message(tmp_path):
    path = write_segment(tmp_path, sample_frames(5))
    path.write_bytes(path.read_bytes()[:-2])
    result = CliRunner().invoke(main, ["cat", str(path)])
    assert result.exit_code == 1 and "corrupt at byte offset" in result.output


def test_usage_error_exits_2():
    assert CliRunner().invoke(main, ["cat"]).exit_code == 2


def test_cat_from_an_offset_that_is_no_frame_boundary_says_so(tmp_path):
    path = write_segment(tmp_path, sample_frames(5))
    result = CliRunner().invoke(main, ["cat", str(path), "--from-offset", "3"])
    assert result.exit_code == 1
    assert "is not the start of a zstd frame" in result.output and "--offsets" in result.output
    assert "restore" not in result.output
    assert CliRunner().invoke(main, ["cat", str(path), "--from-offset", "-5"]).exit_code == 2
    past_end = CliRunner().invoke(main, ["cat", str(path), "--from-offset", "999999"])
    assert past_end.exit_code == 1 and "not the start of a zstd frame" in past_end.output
