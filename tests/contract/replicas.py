"""Several replicas for the contract suite (SORA_CONTRACT_REPLICAS=N): a real PostgreSQL (initdb into a temp
dir, its own port), moto as the S3-compatible asset store, N shims sharing both, and a round-robin TCP load
balancer in front of them, so that the official SDKs' requests spread over every replica.

Standard library only (plus the binaries: PostgreSQL's server, psql, setpriv under root, moto_server).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Optional

REPLICAS = int(os.environ.get("SORA_CONTRACT_REPLICAS", "1"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise RuntimeError("no PostgreSQL server found (apt-get install postgresql, or run `bash .ci/test`)")
    return Path(versions[-1]).parent


def _as_owner(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: the cluster belongs to nobody then.
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"] + cmd
    return cmd


class Postgres:
    def __init__(self, tmp: Path):
        bin_dir = _pg_bin()
        # Its own directory in the system's temp dir: pytest's is private to this user, and under root the
        # cluster's owner (nobody) must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="sora-shim-pg-"))
        data, sockets = self.dir / "data", self.dir / "run"
        sockets.mkdir(parents=True)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "nobody:nogroup", str(self.dir)], check=True)
        done = subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                         "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        self.port = _free_port()
        self.log = open(tmp / "postgres.log", "wb")
        self.proc = subprocess.Popen(
            _as_owner([str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(sockets),
                       "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=300"]),
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 30
        while subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-At", "-c",
                              "SELECT 1"], capture_output=True).returncode != 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start (see {tmp / 'postgres.log'})")
            time.sleep(0.1)
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: fast shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Moto:
    def __init__(self, bucket: str):
        binary = os.environ.get("SORA_SHIM_TEST_MOTO",
                                str(Path(__file__).resolve().parents[2] / "target/s3-venv/bin/moto_server"))
        self.port = _free_port()
        self.proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{self.url}/{bucket}", method="PUT"), timeout=2)
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"moto ({binary}) did not start")
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class RoundRobin:
    """A layer-4 load balancer: each new client connection goes to the next replica, bytes copied both ways."""

    def __init__(self, upstreams: list[str]):
        self.upstreams = [u.removeprefix("http://") for u in upstreams]
        self.next = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections_per_replica = [0] * len(self.upstreams)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                i = self.next % len(self.upstreams)
                self.next += 1
                self.connections_per_replica[i] += 1
            host, port = self.upstreams[i].rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)))
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.listener.close()


def shared_config(moto_url: str) -> str:
    """What every replica's config adds: the shared store and the shared asset storage."""
    return (f'\n[store]\nkind = "postgres"\nlease_secs = 6\n\n[assets]\nkind = "s3"\nbucket = "videos"\n'
            f'region = "us-east-1"\nendpoint = "{moto_url}"\n')


def shared_env(pg: Postgres) -> dict[str, str]:
    return {
        "SORA_SHIM_DATABASE_URL": pg.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def describe(lb: Optional[RoundRobin]) -> str:
    if lb is None:
        return "one shim"
    return f"{len(lb.upstreams)} replicas behind a round-robin balancer (connections: {lb.connections_per_replica})"
