import json
from pathlib import Path

import pytest

from capture import protocol
from capture.protocol import FrameKind

# Live captures: tests/data/realframes.jsonl (see tests/data/realframes.README.md).
REALFRAMES = Path(__file__).resolve().parents[1] / "data" / "realframes.jsonl"


def real_frames() -> list[str]:
    return [json.loads(line)["frame"] for line in REALFRAMES.read_text().splitlines()]


def test_initial_subscribe_is_the_exact_documented_message():
    text = protocol.initial_subscribe(["111", "222"])
    assert text == (
        '{"assets_ids":["111","222"],"type":"market",'
        '"initial_dump":true,"custom_feature_enabled":true}'
    )


def test_initial_subscribe_without_custom_features():
    assert json.loads(protocol.initial_subscribe(["1"], custom_features=False)) == {
        "assets_ids": ["1"],
        "type": "market",
        "initial_dump": True,
        "custom_feature_enabled": False,
    }


def test_subscribe_and_unsubscribe_carry_no_type():
    assert json.loads(protocol.subscribe(["5"])) == {
        "operation": "subscribe",
        "assets_ids": ["5"],
        "custom_feature_enabled": True,
    }
    assert json.loads(protocol.unsubscribe(["5", "6"])) == {
        "operation": "unsubscribe",
        "assets_ids": ["5", "6"],
    }


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("PONG", FrameKind.PONG),
        ("INVALID OPERATION", FrameKind.CONTROL),
        ("NO NEW ASSETS", FrameKind.CONTROL),
        ("[]", FrameKind.EMPTY),
        (" [] ", FrameKind.EMPTY),
        ('{"event_type":"book"}', FrameKind.DATA),
        ('[{"event_type":"book"}]', FrameKind.DATA),
        ('{"event_type": "price_change", "market": ', FrameKind.DATA),
        (b"\x00\xff", FrameKind.BINARY),
    ],
)
def test_classify(message, kind):
    assert protocol.classify(message) is kind


def test_every_real_frame_is_data_or_empty():
    kinds = {protocol.classify(frame) for frame in real_frames()}
    assert kinds == {FrameKind.DATA, FrameKind.EMPTY}


def test_new_market_assets_from_the_real_new_market_frame():
    frames = [f for f in real_frames() if '"new_market"' in f]
    assert frames
    for frame in frames:
        found = protocol.new_market_assets(frame)
        expected = json.loads(frame)["assets_ids"] if frame.endswith("}") else None
        if expected is not None:
            assert found == expected


def test_new_market_assets_in_arrays_and_ignores_other_events():
    frame = json.dumps(
        [
            {"event_type": "book", "asset_id": "1", "new": "new_market"},
            {"event_type": "new_market", "assets_ids": ["7", "8"]},
        ]
    )
    assert protocol.new_market_assets(frame) == ["7", "8"]
    assert protocol.new_market_assets('{"event_type":"book"}') == []
    assert protocol.new_market_assets('{"event_type":"new_market", bad json') == []
