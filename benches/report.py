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


def parse(name: str, conns: str, run: str, which: str = "") -> None:
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
        **({"which": which} if which else {}),
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


def poll(shim: str, fake: str, db: str, jobs: str, rate: str, pid: str) -> None:
    """Creates `jobs` videos at the shim, waits until every one is finished, and prints one JSON line: how long it
    took, what became of the jobs, what the rate-limited fake saw, and the shim's peak memory."""
    import http.client
    import threading
    import time
    import urllib.request

    jobs, rate = int(jobs), int(rate)
    host, port = shim.split(":")
    created, refused = [], []

    def creator(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        for i in range(n):
            conn.request("POST", "/v1/videos", body=json.dumps({"prompt": f"poll {i}"}),
                         headers={"Authorization": "Bearer bench", "Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            (created if r.status == 200 else refused).append(json.loads(body).get("id") if r.status == 200 else r.status)

    started = time.monotonic()
    threads = [threading.Thread(target=creator, args=(jobs // 8 + (1 if t < jobs % 8 else 0),)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created_in = time.monotonic() - started
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    deadline = time.monotonic() + 3600
    while True:
        states = dict(ro.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        if states.get("completed", 0) + states.get("failed", 0) >= len(created) or time.monotonic() > deadline:
            break
        time.sleep(2)
    finished_in = time.monotonic() - started
    stats = json.load(urllib.request.urlopen(f"http://{fake}/__control/stats"))
    hwm = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM"))
    print(json.dumps({
        "poll": True, "jobs": jobs, "rate": rate, "created": len(created), "refused": len(refused),
        "created_s": round(created_in, 1), "finished_s": round(finished_in, 1), "states": states,
        "fake_creates": stats["creates"], "fake_polls": stats["polls"], "fake_downloads": stats["downloads"],
        "fake_429": stats["rate_limited"], "fake_peak_rps": stats["peak_rps"], "shim_peak_kib": hwm,
    }))


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


def compare(rows, name, conns, rps, mib, p50, floor):
    """The row's ratio to what it is measured against (the floor, nginx, LiteLLM), and for a proxy row its p50
    minus the fake backend's own p50 at the same load (what the proxy adds)."""
    def other(prefix: str):
        what = name.split(": ", 1)[1] if ": " in name else name
        rs = rows.get((f"{prefix}: {what}", conns))
        return rs

    ratio, added = "", ""
    if name.startswith("shim: GET /v1/videos/{id}") and "content" not in name and floor and rps:
        ratio = f"{rps / floor:.2f}× floor"
    elif name.startswith("shim: GET /v1/videos/{id}/content"):
        nginx = rows.get(("nginx: GET 50 MB file", conns))
        base = med([r["mib_s"] for r in nginx]) if nginx else None
        ratio = f"{mib / base:.2f}× nginx" if base and mib else ""
    elif name.startswith("shim → fake: "):
        peer = other("LiteLLM → fake")
        base = med([r["rps"] for r in peer]) if peer else None
        ratio = f"{rps / base:.2f}× LiteLLM" if base and rps else ""
    if name.startswith(("shim → fake", "LiteLLM → fake")):
        what = name.split(": ", 1)[1]
        direct = rows.get((f"fake directly: {what}", conns))
        base = med([r["p50_ms"] for r in direct]) if direct else None
        added = f"{p50 - base:+.2f} ms" if base is not None and p50 is not None else ""
    return ratio, added


def write(results_path: str, runs: str, duration: str) -> None:
    rows, memory, polls = {}, [], []
    for line in open(results_path):
        r = json.loads(line)
        if "memory" in r:
            memory.append(r)
            continue
        if "poll" in r:
            polls.append(r)
            continue
        rows.setdefault((r["name"], r["conns"]), []).append(r)
    floor = med([r["rps"] for r in rows.get(("floor: GET (same JSON from memory)", 64), [])])
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    print("# Benchmarks\n")
    print(f"Measured {datetime.date.today().isoformat()} on {machine()}, commit `{rev}`, with `bash benches/run.sh` "
          f"(wrk, 2 threads, {duration} s per run, median of {runs} runs). The load generator, the servers and the "
          "shim share the same 2 cores, so absolute figures are low and drift; compare the ratios.\n")
    print("Creates go to a backend that is never reachable, so they measure admission alone (parse, validate, store "
          "the upload, persist the job with `synchronous=FULL`, answer); dispatch retries in the background. The 50 MB "
          "download is a finished video's asset replaced on disk by a 50 MB H.264 file, served by the shim from its "
          "storage and by nginx (sendfile) from a copy.\n")
    print("The peer rows send the same reads and creates to one fake OpenAI-compatible backend "
          "(tests/fakes/openai_videos.py) directly, through LiteLLM's proxy (`litellm[proxy]`, pinned in "
          "benches/litellm-requirements.txt, its `/v1/videos` routed to the fake), and through the shim (mapping "
          "`openai`). The shim answers reads from its own store and creates once persisted, dispatching in the "
          "background; LiteLLM forwards every call. At 1 connection the p50 column is each path's latency, so the "
          "difference to `fake directly` is what the proxy adds; 16 connections is saturation. The shadow row "
          "copies every create to a second fake (`sample = 1.0`). wrk is closed-loop; the rows whose connections read "
          "`N/s` are open-loop instead (benches/rate.py: N requests each second at fixed times, latency counted from "
          "each request's scheduled time). `ratio` is requests/s against the floor or LiteLLM, MiB/s against nginx; "
          "`added p50` is a proxy's p50 minus the fake's own at the same load.\n")
    print("| scenario | connections | requests/s | MiB/s | p50 ms | p99 ms | non-2xx | ratio | added p50 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, conns), rs in rows.items():
        rps, mib = med([r["rps"] for r in rs]), med([r["mib_s"] for r in rs])
        p50 = med([r["p50_ms"] for r in rs])
        ratio, added = compare(rows, name, conns, rps, mib, p50, floor)
        print(f"| {name} | {conns} | {fmt(rps, 0)} | {fmt(mib)} | {fmt(p50, 2)} | "
              f"{fmt(med([r['p99_ms'] for r in rs]), 2)} | {sum(r['non_2xx'] for r in rs)} | {ratio} | {added} |")
    print("\nThe content rows compare the shim with nginx: read the MiB/s column. `peak` is VmHWM, reset just "
          "before the load (`/proc/PID/clear_refs`); `before` is what the process already held after the seeding "
          "renders and the create loads (the allocator keeps freed render buffers), so the cost of the downloads is "
          "the difference: assets are streamed in 256 KiB chunks, never held whole.\n")
    print("| memory | before | after |")
    print("|---|---:|---:|")
    for m in memory:
        print(f"| {m['memory']} | {m['before_kib'] / 1024:,.1f} MiB | {m['after_kib'] / 1024:,.1f} MiB |")
    for p in polls:
        print(f"\n**{p['jobs']:,} unfinished jobs through a backend limited to {p['rate']} requests/s.** The fake "
              f"answers 429 to API calls beyond {p['rate']} in any one-second window; the shim's backend has "
              f"`requests_per_second = {p['rate']}`. Steps: 2 polls per job, 160x96 1 s videos.\n")
        print("| created | refused creates | all created after | all finished after | job states | provider calls "
              "(creates / polls / downloads) | refused by the provider (429) | most calls in one second | shim peak RSS |")
        print("|---:|---:|---:|---:|---|---|---:|---:|---:|")
        states = ", ".join(f"{k} {v:,}" for k, v in sorted(p["states"].items()))
        print(f"| {p['created']:,} | {p['refused']:,} | {p['created_s']:,.1f} s | {p['finished_s']:,.1f} s | {states} | "
              f"{p['fake_creates']:,} / {p['fake_polls']:,} / {p['fake_downloads']:,} | {p['fake_429']:,} | "
              f"{p['fake_peak_rps']} | {p['shim_peak_kib'] / 1024:,.1f} MiB |")


def ab(results_path: str) -> None:
    """benches/ab.sh: one Markdown table, before → after, medians over the runs."""
    rows, copies, cpu, order = {}, {}, {}, []
    for line in open(results_path):
        r = json.loads(line)
        if "cpu" in r:
            cpu.setdefault((r["cpu"], r["conns"], r["which"]), []).append(r)
            continue
        if "copies" in r:
            which, conns = r["copies"].split()
            copies.setdefault((int(conns), which), []).append(r["candidate"] / r["primary"] if r["primary"] else None)
            continue
        key = (r["name"], r["conns"])
        if key not in rows:
            order.append(key)
        rows.setdefault(key, {}).setdefault(r["which"], []).append(r)

    def stat(runs, field):
        return med([x[field] for x in runs])

    print("| row | connections | before req/s | after req/s | after/before | before p50 / p99 ms | after p50 / p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, conns in order:
        b, a = rows[(name, conns)].get("before", []), rows[(name, conns)].get("after", [])
        rb, ra = stat(b, "rps"), stat(a, "rps")
        ratio = f"{ra / rb:.2f}×" if rb and ra else "–"
        print(f"| {name} | {conns} | {fmt(rb, 0)} | {fmt(ra, 0)} | {ratio} | "
              f"{fmt(stat(b, 'p50_ms'), 2)} / {fmt(stat(b, 'p99_ms'), 2)} | "
              f"{fmt(stat(a, 'p50_ms'), 2)} / {fmt(stat(a, 'p99_ms'), 2)} |")
        if name.startswith("GET /v1/videos/{id}"):
            floors = rows.get(("floor: GET (same JSON from memory)", conns), {})
            def vs_floor(which):
                by_run = {f["run"]: f["rps"] for f in floors.get(which, [])}
                return med([g["rps"] / by_run[g["run"]] for g in rows[(name, conns)].get(which, [])
                            if by_run.get(g["run"])])
            fb, fa = vs_floor("before"), vs_floor("after")
            if fb or fa:
                times = lambda v: "–" if v is None else f"{v:.2f}× floor"
                print(f"| ↳ against the floor measured beside it | {conns} | {times(fb)} | {times(fa)} | | | |")
        if (name, conns, "after") in cpu:
            def per_k(which, field):
                # CPU milliseconds per create: the CPU time of the run over the requests wrk made in it.
                by_run = {g["run"]: g["requests"] for g in rows[(name, conns)].get(which, [])}
                return med([c[field] * 1000 / c["hz"] / by_run[c["run"]] for c in cpu.get((name, conns, which), [])
                            if by_run.get(c["run"])])
            ms = lambda v: "–" if v is None else f"{v:.2f}"
            print(f"| ↳ CPU ms per create: shim / both fakes | {conns} | {ms(per_k('before', 'shim'))} / "
                  f"{ms(per_k('before', 'fakes'))} | {ms(per_k('after', 'shim'))} / {ms(per_k('after', 'fakes'))} "
                  "| | | |")
        if "shadow copy" in name and (conns, "before") in copies:
            cb, ca = med(copies.get((conns, "before"), [])), med(copies.get((conns, "after"), []))
            pct = lambda v: "–" if v is None else f"{v * 100:.0f}%"
            print(f"| ↳ shadow copies made, per create admitted | {conns} | {pct(cb)} | {pct(ca)} | | | |")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"parse": parse, "seed": seed, "poll": poll, "write": write, "ab": ab}[cmd](*args)
