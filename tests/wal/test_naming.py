from wal.naming import list_sealed, list_segments, make_name, next_seq, parse_name

NS = 1_795_478_764_000_000_000  # 2026-11-24T00:06:04Z


def test_name_has_padded_sequence_and_utc_stamp():
    name = make_name(42, NS)
    assert name.sealed_name == "000000000042-20261124T000604Z.jsonl.zst"
    assert make_name(42, NS, is_open=True).filename.endswith(".jsonl.zst.open")


def test_parse_round_trips_and_ignores_other_files():
    name = make_name(7, NS, is_open=True)
    assert parse_name(name.filename) == name
    assert parse_name("capture.status.json") is None
    assert parse_name("7-20261124T000604Z.jsonl.zst") is None


def test_listing_sorts_by_sequence_and_next_seq_follows_highest(tmp_path):
    for seq in (10, 2, 9):
        (tmp_path / make_name(seq, NS).sealed_name).touch()
    (tmp_path / make_name(11, NS, is_open=True).filename).touch()
    (tmp_path / ".lock").touch()
    assert [n.seq for n, _ in list_segments(tmp_path)] == [2, 9, 10, 11]
    assert [p.name[:12] for p in list_sealed(tmp_path)] == [
        "000000000002",
        "000000000009",
        "000000000010",
    ]
    assert next_seq(tmp_path) == 12


def test_next_seq_of_empty_directory_is_zero(tmp_path):
    assert next_seq(tmp_path) == 0
