"""capture.protocol.marked: the C test (capture/_marks.c) and the Python one agree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.flood import frame_pool
from capture import protocol
from tests.accel import not_built

NOT_BUILT = not_built("capture/_marks.c", "capture tests frames the slower Python way")
PIECES = [*protocol.MARKS, '"new_', 'market"', '"market_', "resolved", "_", '"', "é", "\ud800"]


def test_the_c_test_is_built_and_in_use() -> None:
    assert protocol.marked is not protocol.py_marked, NOT_BUILT


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=6), max_size=12))
def test_c_and_python_agree_on_any_text(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert protocol.marked(text) == protocol.py_marked(text)


def test_c_and_python_agree_on_the_feed_s_frames() -> None:
    texts = frame_pool(2000, 5)
    texts += ['{"event_type":"new_market","x":1}', '[{"event_type":"market_resolved"}]']
    assert [protocol.marked(t) for t in texts] == [protocol.py_marked(t) for t in texts]
    assert sum(map(protocol.marked, texts)) >= 2
