import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.flood import frame_pool
from tests.accel import not_built
from wal import records
from wal.records import decode_line, encode_record


def test_encode_is_one_compact_utf8_line():
    line = encode_record(records.frame(1, 2, 3, '{"price": ".48"} é'))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.startswith(b'{"type":"frame",')
    assert "é".encode() in line


def test_lone_surrogate_is_escaped_and_round_trips():
    text = "a\udc80b\ud800"
    line = encode_record(records.frame(1, 0, 0, text))
    line.decode("utf-8")  # valid UTF-8 on disk
    assert b"\\udc80" in line
    assert decode_line(line)["text"] == text


def test_binary_frame_round_trips_through_base64():
    data = bytes(range(256))
    record = records.frame(1, 0, 0, data)
    assert "text" not in record
    assert records.frame_payload(decode_line(encode_record(record))) == data


def test_seal_marks_recovery_only_when_recovered():
    assert "recovered" not in records.seal(1, 2, 3)
    assert records.seal(1, 2, 3, recovered=True, truncated_bytes=9)["truncated_bytes"] == 9


@given(st.text())
def test_any_text_round_trips(text):
    line = encode_record(records.frame(5, 1, 2, text))
    assert decode_line(line)["text"] == text
    assert json.loads(line)["type"] == "frame"


def test_decode_rejects_non_record():
    for bad in (b"[]", b'{"x":1}', b'{"type":3}'):
        try:
            decode_line(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


@given(
    st.integers(0, 2**63),
    st.integers(0, 10**6),
    st.integers(0, 2**40),
    st.one_of(
        st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010)),  # surrogates too
        st.text(),
        st.binary(max_size=100),
    ),
)
def test_fast_frame_encoding_is_byte_identical(ts_ns, conn, n, message):
    expected = encode_record(records.frame(ts_ns, conn, n, message))
    assert records.encode_frame(ts_ns, conn, n, message) == expected


_frame_texts = st.one_of(
    st.text(),
    st.binary(max_size=50),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x3000)),  # controls, U+2028
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010)),  # surrogates too
)


@given(
    st.lists(
        st.tuples(st.integers(0, 2**63), st.integers(0, 10**6), st.integers(0, 2**40), _frame_texts)
    )
)
def test_batch_frame_encoding_is_byte_identical(frames):
    expected = b"".join(encode_record(records.frame(*f)) for f in frames)
    assert records.encode_frames(frames) == expected


NOT_BUILT = not_built("wal/_encode.c", "capture encodes batches the slower Python way")


def test_the_c_encoder_is_built_and_in_use() -> None:
    assert records.ACCELERATED, NOT_BUILT


@settings(max_examples=1000)
@given(
    st.lists(
        st.tuples(
            st.integers(-(2**64), 2**64) | st.integers(0, 2**63 - 1),
            st.integers(-5, 10**6),
            st.integers(0, 2**40),
            _frame_texts | st.sampled_from(['{"a":"\\\\"}', "\x00\x1f\x7f", "\ud800", "é\n"]),
        ),
        max_size=20,
    )
)
def test_the_c_encoder_gives_the_python_bytes_or_leaves_the_batch_to_it(frames) -> None:
    expected = records.py_encode_frames(frames)
    assert records.encode_frames(frames) == expected
    assert expected == b"".join(encode_record(records.frame(*f)) for f in frames)


def test_the_c_encoder_takes_the_feed_s_frames_and_refuses_what_is_not_a_frame_list() -> None:
    frames = [
        (1_786_728_467_000_000_000 + i, 1, i, text) for i, text in enumerate(frame_pool(500, 3))
    ]
    assert records._c_frames is not None, NOT_BUILT
    assert records._c_frames(frames) == records.py_encode_frames(frames)
    assert records._c_frames([(1, 2, 3)]) is None
    assert records._c_frames([(1, 2, 3, b"binary")]) is None
    with pytest.raises(TypeError):
        records._c_frames(tuple(frames))
