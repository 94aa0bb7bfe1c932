import socket

from capture.notify import Notifier


def test_without_notify_socket_everything_is_a_no_op():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    notifier.ready("x")
    notifier.watchdog()


def test_messages_reach_the_socket_and_watchdog_is_half_the_timeout(tmp_path):
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_interval_s == 15.0
        notifier.ready("2 connections up")
        notifier.stopping()
        assert sock.recv(100) == b"READY=1\nSTATUS=2 connections up"
        assert sock.recv(100) == b"STOPPING=1\nSTATUS=stopping"


def test_watchdog_for_another_pid_is_ignored():
    notifier = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval_s is None
