"""Helpers for benches/run.sh: parse wrk output, seed a store with N jobs, write BENCHMARKS.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
SIZES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def to_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def parse(name: str, conns: str, run: str) -> None:
    out = sys.stdin.read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    tps = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    lat = {p: to_ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    print(json.dumps({
        "name": name, "conns": int(conns), "run": int(run),
        "rps": float(rps.group(1)) if rps else None,
        "mib_s": float(tps.group(1)) * SIZES[tps.group(2)] / 1024**2 if tps else None,
        "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "requests": int(total.group(1)) if total else 0,
    }))


def seed(source_db: str, dest_db: str, n: str, ids_path: str) -> None:
    """Copies one finished job of `source_db` n times into `dest_db` with fresh ids; writes 10k sample ids."""
    n = int(n)
    src = sqlite3.connect(source_db)
    cols = [r[1] for r in src.execute("PRAGMA table_info(jobs)") if r[1] != "seq"]
    row = src.execute(f"SELECT {', '.join(cols)} FROM jobs WHERE state = 'completed' LIMIT 1").fetchone()
    src.close()
    dst = sqlite3.connect(dest_db)
    dst.execute("DELETE FROM jobs")
    id_at = cols.index("id")
    key_at = cols.index("idempotency_key")
    placeholders = ", ".join("?" for _ in cols)
    sample = []
    batch = []
    for i in range(n):
        r = list(row)
        r[id_at] = f"video_{i:048x}"
        r[key_at] = None
        batch.append(r)
        if i % max(1, n // 10000) == 0:
            sample.append(r[id_at])
        if len(batch) == 50000:
            dst.executemany(f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({placeholders})", batch)
            batch = []
    if batch:
        dst.executemany(f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({placeholders})", batch)
    dst.commit()
    dst.close()
    with open(ids_path, "w") as f:
        f.write("\n".join(sample) + "\n")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    return "–" if v is None else f"{v:,.{digits}f}"


def write(results_path: str, runs: str, duration: str) -> None:
    rows, memory = {}, []
    for line in open(results_path):
        r = json.loads(line)
        if "memory" in r:
            memory.append(r)
            continue
        rows.setdefault((r["name"], r["conns"]), []).append(r)
    floor = med([r["rps"] for r in rows.get(("floor: GET (same JSON from memory)", 64), [])])
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print("# Benchmarks\n")
    print(f"Measured {datetime.date.today().isoformat()} on {machine()}, commit `{rev}`, with `bash benches/run.sh` "
          f"(wrk, 2 threads, {duration} s per run, median of {runs} runs). The load generator, the servers and the "
          "shim share the same 2 cores, so absolute figures are low and drift; compare the ratios.\n")
    print("Creates go to a backend that is never reachable, so they measure admission alone (parse, validate, store "
          "the upload, persist the job with `synchronous=FULL`, answer); dispatch retries in the background. The 50 MB "
          "download is a finished video's asset replaced on disk by a 50 MB H.264 file, served by the shim from its "
          "storage and by nginx (sendfile) from a copy.\n")
    print("| scenario | connections | requests/s | MiB/s | p50 ms | p99 ms | non-2xx | vs floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, conns), rs in rows.items():
        rps = med([r["rps"] for r in rs])
        polling = name.startswith("shim: GET /v1/videos/{id}") and "content" not in name
        ratio = f"{rps / floor:.2f}×" if floor and rps and polling else ""
        print(f"| {name} | {conns} | {fmt(rps, 0)} | {fmt(med([r['mib_s'] for r in rs]))} | "
              f"{fmt(med([r['p50_ms'] for r in rs]), 2)} | {fmt(med([r['p99_ms'] for r in rs]), 2)} | "
              f"{sum(r['non_2xx'] for r in rs)} | {ratio} |")
    print("\nThe content rows compare the shim with nginx: read the MiB/s column. `peak` is VmHWM, reset just "
          "before the load (`/proc/PID/clear_refs`); `before` is what the process already held after the seeding "
          "renders and the create loads (the allocator keeps freed render buffers), so the cost of the downloads is "
          "the difference: assets are streamed in 256 KiB chunks, never held whole.\n")
    print("| memory | before | after |")
    print("|---|---:|---:|")
    for m in memory:
        print(f"| {m['memory']} | {m['before_kib'] / 1024:,.1f} MiB | {m['after_kib'] / 1024:,.1f} MiB |")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"parse": parse, "seed": seed, "write": write}[cmd](*args)
