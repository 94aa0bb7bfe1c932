"""Which assets are wanted: sources, new_market, market_resolved, the drop guard (pure)."""

from __future__ import annotations

from capture.wanted import ANNOUNCED_REFRESHES, Wanted

LISTED = [str(n) for n in range(100, 110)]


def test_new_markets_are_ignored_unless_following():
    wanted = Wanted(["1"])
    for n in range(5):
        assert wanted.announce([f"9{n}", f"8{n}"]) == []
    assert wanted.desired() == ["1"]


def test_new_markets_are_followed_when_asked():
    wanted = Wanted(["1"], follow_new=True)
    assert wanted.announce(["2", "3", "1"]) == ["2", "3"]
    assert wanted.announce(["2"]) == []
    assert wanted.desired() == ["1", "2", "3"]


def test_an_announced_asset_never_listed_is_dropped_after_the_bounded_refreshes():
    wanted = Wanted(follow_new=True)
    wanted.listed(LISTED)
    wanted.announce(["77"])
    for _ in range(ANNOUNCED_REFRESHES - 1):
        assert wanted.listed(LISTED).applied
        assert "77" in wanted.desired()
    wanted.listed(LISTED)
    assert "77" not in wanted.desired()


def test_an_announced_asset_that_gamma_lists_becomes_discovered():
    wanted = Wanted(follow_new=True)
    wanted.listed(LISTED)
    wanted.announce(["77"])
    wanted.listed([*LISTED, "77"])
    assert wanted.announced == {} and "77" in wanted.discovered


def test_a_resolved_asset_is_dropped_after_the_grace_not_before():
    wanted = Wanted(["1", "2", "3"], resolved_grace_s=60.0)
    assert wanted.resolve(["2", "3", "99"], now=10.0) == ["2", "3"]  # 99 is not held
    assert wanted.expire(69.0) == [] and wanted.desired() == ["1", "2", "3"]
    assert wanted.next_expiry() == 70.0
    assert wanted.expire(70.0) == ["2", "3"]
    assert wanted.desired() == ["1"]


def test_a_resolved_asset_stays_dropped_when_gamma_still_lists_it():
    wanted = Wanted(resolved_grace_s=0.0)
    wanted.listed(LISTED)
    wanted.resolve([LISTED[0]], now=0.0)
    wanted.expire(0.0)
    wanted.listed(LISTED)
    assert LISTED[0] not in wanted.desired()


def test_a_fifth_may_go_at_once():
    wanted = Wanted()
    wanted.listed(LISTED)
    result = wanted.listed(LISTED[2:])
    assert result.applied and result.dropped == 2 and len(wanted.desired()) == 8


def test_more_than_a_fifth_at_once_is_refused_then_the_next_refresh_confirms_it():
    wanted = Wanted(["1"])
    wanted.listed(LISTED)
    refused = wanted.listed(LISTED[:5])
    assert not refused.applied and refused.dropped == 5 and wanted.refused_total == 1
    assert len(wanted.desired()) == 11
    confirmed = wanted.listed(LISTED[:5])
    assert confirmed.applied and confirmed.confirmed
    assert wanted.desired() == ["1", *LISTED[:5]]


def test_a_confirmation_drops_only_what_both_listings_dropped():
    wanted = Wanted()
    wanted.listed(LISTED)
    wanted.listed(LISTED[:5])  # refused: 105..109 gone
    result = wanted.listed(LISTED[3:7])  # 100..102 and 107..109 gone now
    assert result.applied and result.confirmed and result.dropped == 3
    assert set(wanted.desired()) == set(LISTED[:7])  # only 107..109 confirmed


def test_a_refusal_followed_by_a_normal_listing_forgets_the_refusal():
    wanted = Wanted()
    wanted.listed(LISTED)
    wanted.listed(LISTED[:5])
    assert wanted.listed(LISTED).applied
    assert not wanted.listed(LISTED[:5]).applied  # refused again: a new glitch
