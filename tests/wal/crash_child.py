"""Child for the crash test: append numbered frames as fast as possible and print, after
each fsync, how many of them are durable. Usage: crash_child.py DIR ROUND."""

import sys
import time

from wal import Policy, WalWriter, records


def main() -> None:
    directory, round_no = sys.argv[1], int(sys.argv[2])
    writer = WalWriter.open(directory, Policy(flush_ms=2, rotate_s=0.15, rotate_bytes=200_000))
    print("ready", flush=True)
    reported = 0
    i = 0
    while True:
        for _ in range(200):
            text = f'{{"event_type":"last_trade_price","round":{round_no},"i":{i}}}'
            writer.append(records.frame(time.time_ns(), round_no, i, text))
            i += 1
        durable = writer.stats.durable  # line numbers 1..durable are fsynced
        if durable != reported:
            print(durable, flush=True)
            reported = durable
        time.sleep(0.0005)


if __name__ == "__main__":
    main()
