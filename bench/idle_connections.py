#!/usr/bin/env python3
"""RSS a server gains from N idle TCP connections (no TLS hello sent).

    bench/idle_connections.py PORT PID [N]    # N defaults to 3000

Raise the open-file limit first (ulimit -n 10000). Used for the read-ahead
stream's cost per connection (docs/performance.md).
"""
import socket
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    port, pid = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    before = rss_kb(pid)
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    time.sleep(2)
    print(f"{n} idle connections: RSS {before / 1024:.1f} -> {rss_kb(pid) / 1024:.1f} MB")
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
