from capture.watchdog import NO_DATA, NO_PONG, Stall, Watchdog


def test_quiet_until_pong_timeout_counted_from_start():
    dog = Watchdog(started=100.0, pong_timeout_s=30, silence_timeout_s=120)
    assert dog.check(129.9, has_assets=True) is None
    assert dog.check(130.0, has_assets=True) == Stall(NO_PONG, 30.0)


def test_a_pong_resets_the_pong_watchdog():
    dog = Watchdog(started=0.0, pong_timeout_s=30, silence_timeout_s=120)
    dog.last_pong = 25.0
    assert dog.check(50.0, has_assets=False) is None
    assert dog.check(55.0, has_assets=False) == Stall(NO_PONG, 30.0)


def test_data_silence_fires_while_pongs_keep_coming():
    dog = Watchdog(started=0.0, pong_timeout_s=30, silence_timeout_s=120)
    dog.last_data = 10.0
    dog.last_pong = 129.0
    assert dog.check(129.0, has_assets=True) is None
    assert dog.check(130.5, has_assets=True) == Stall(NO_DATA, 120.5)


def test_data_silence_is_fine_without_assets():
    dog = Watchdog(started=0.0, pong_timeout_s=30, silence_timeout_s=120)
    dog.last_pong = 299.0
    assert dog.check(300.0, has_assets=False) is None
