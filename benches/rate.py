"""Open-loop load at a fixed rate: sends RATE requests per second for DURATION seconds, each at its scheduled time
whatever the earlier ones are doing, and measures each latency from that scheduled time (so a slow answer cannot
hide the requests queued behind it: no coordinated omission). wrk cannot do this (it is closed-loop), and wrk2 is
not packaged by Debian.

    python3 benches/rate.py NAME RATE DURATION URL KEY BODY   # prints one JSON line in report.py's format

Keep-alive connections come from a pool that grows as needed, so a stalled server shows as latency, not as a
generator limit.
"""

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


async def request(pool: list, host: str, port: int, raw: bytes) -> int:
    if pool:
        reader, writer = pool.pop()
    else:
        reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    pool.append((reader, writer))
    return int(status_line.split()[1])


async def run(name: str, rate: float, duration: float, url: str, key: str, body: str) -> dict:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    payload = body.encode()
    raw = (
        f"POST {u.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    pool: list = []
    latencies: list[float] = []
    statuses: list[int] = []
    errors = 0

    async def one(scheduled: float) -> None:
        nonlocal errors
        try:
            statuses.append(await request(pool, host, port, raw))
            latencies.append(time.monotonic() - scheduled)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            errors += 1

    start = time.monotonic()
    n = int(rate * duration)
    tasks = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "name": name, "conns": f"{rate:g}/s", "run": 0, "rps": len(latencies) / elapsed, "mib_s": 0.0,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "non_2xx": sum(1 for s in statuses if not 200 <= s < 300) + errors,
    }


if __name__ == "__main__":
    name, rate, duration, url, key, body = sys.argv[1:7]
    print(json.dumps(asyncio.run(run(name, float(rate), float(duration), url, key, body))))
