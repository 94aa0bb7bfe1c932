import json
import threading
import time

from click.testing import CliRunner

from tests.timeouts import TIMEOUT_S, scaled
from tests.wal.helpers import sample_frames, write_segment
from tests.wal.test_reader import _open_segment_with_batches
from wal import Policy, WalWriter, records, recover_directory
from wal.cli import main
from wal.naming import list_sealed, list_segments, parse_name


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


def _ls(directory, *extra):
    result = CliRunner().invoke(main, ["ls", str(directory), "--json", *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_ls_from_seals_gives_the_counts_that_decoding_everything_gives(tmp_path):
    write_segment(tmp_path, sample_frames(300), Policy(flush_ms=0, batch_bytes=500))
    path, _ = _open_segment_with_batches(tmp_path, [sample_frames(20), sample_frames(5)])
    recovered = tmp_path / "recovered"
    recovered.mkdir()
    (recovered / path.name).write_bytes(path.read_bytes()[:-7])
    recover_directory(recovered)
    for directory in (tmp_path, recovered):
        fast, deep = _ls(directory), _ls(directory, "--deep")
        assert fast == deep
    assert [info["state"] for info in _ls(tmp_path)] == ["sealed", "open"]
    assert _ls(tmp_path)[1]["records"] == 26 and _ls(recovered)[0]["frames"] == 20


def test_ls_shows_a_segment_without_a_readable_seal_as_damaged(tmp_path):
    path = write_segment(tmp_path, sample_frames(50), Policy(flush_ms=0, batch_bytes=500))
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    [info] = _ls(tmp_path)
    assert info["state"] == "damaged" and info["records"] is None
    assert "no readable seal" in info["error"]
    text = CliRunner().invoke(main, ["ls", str(tmp_path)])
    assert text.exit_code == 0 and "damaged" in text.output and "?" in text.output


def test_ls_and_verify_follow_a_segment_sealed_or_pruned_after_listing(tmp_path, monkeypatch):
    write_segment(tmp_path, sample_frames(5))
    path, _ = _open_segment_with_batches(tmp_path, [sample_frames(3)])
    recover_directory(tmp_path)  # seals the .open: what a rotation does meanwhile
    stale = [*list_segments(tmp_path), (parse_name(path.name), path)]
    pruned = stale[0][1]
    stale_pruned = [(parse_name(pruned.name), pruned)]
    monkeypatch.setattr("wal.cli.list_segments", lambda directory: stale)
    infos = _ls(tmp_path)
    assert [info["state"] for info in infos] == ["sealed", "sealed", "sealed"]
    assert infos[2]["name"] == path.name.removesuffix(".open")
    ok = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert ok.exit_code == 0 and "3 segments intact" in ok.output
    pruned.unlink()
    monkeypatch.setattr("wal.cli.list_segments", lambda directory: stale_pruned)
    for command in (["ls", str(tmp_path)], ["verify", str(tmp_path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output
        assert f"{pruned.name} was removed while" in result.stderr


def test_ls_and_verify_never_fail_while_a_writer_rotates_and_old_segments_are_pruned(tmp_path):
    writer = WalWriter.open(tmp_path, Policy(flush_ms=5, batch_bytes=4096, rotate_s=0.2))
    stop = threading.Event()

    def write_and_prune() -> None:
        n = 0
        while not stop.is_set():
            writer.append(records.frame(1_700_000_000_000_000_000 + n, 0, n, f'{{"i":{n}}}'))
            n += 1
            sealed = list_sealed(tmp_path)
            for old in sealed[:-3]:
                old.unlink(missing_ok=True)
            time.sleep(0.0005)

    thread = threading.Thread(target=write_and_prune)
    thread.start()
    try:
        deadline = time.monotonic() + scaled(3)
        runs = 0
        while time.monotonic() < deadline or runs < 10:
            for command in (["ls", str(tmp_path)], ["verify", str(tmp_path)]):
                result = CliRunner().invoke(main, command)
                assert result.exit_code == 0, (result.output, result.exception)
                runs += 1
    finally:
        stop.set()
        thread.join(timeout=TIMEOUT_S)
        assert writer.close(timeout=TIMEOUT_S)


def test_a_dangling_symlink_under_a_segment_name_is_unreadable_not_removed(tmp_path):
    name = "000000000004-20261201T225105Z.jsonl.zst"
    (tmp_path / name).symlink_to(tmp_path / "gone" / name)
    verify = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert verify.exit_code == 1 and f"UNREADABLE {tmp_path / name}" in verify.output
    listed = CliRunner().invoke(main, ["ls", str(tmp_path)])
    assert listed.exit_code == 0 and "unread" in listed.output and "removed" not in listed.output


def test_dash_h_is_help_like_the_other_commands():
    result = CliRunner().invoke(main, ["-h"])
    assert result.exit_code == 0 and "verify" in result.output


def test_a_directory_without_segments_gets_a_note_not_silence(tmp_path):
    (tmp_path / "notes.txt").write_text("not a segment")
    for args in (["ls", str(tmp_path)], ["verify", str(tmp_path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0
        assert f"no WAL segments in {tmp_path}" in result.stderr
