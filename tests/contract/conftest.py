"""Fixtures for the sora-shim contract tests.

One shim process per test session (`shim` fixture); clients are made per test with a fresh API
key each (every key is its own tenant), so tests do not see each other's videos.

Environment:
  SORA_SHIM_BIN            path of the binary (default <repo>/target/debug/sora-shim)
  SORA_SHIM_URL            use an already running shim at this root URL instead of starting one
                           (it must run with the config in SHIM_CONFIG below)
  SORA_CONTRACT_TEST_TIMEOUT  per-test wall-clock limit in seconds (default 300)
  SORA_CONTRACT_REPLICAS   N > 1: N shims sharing a PostgreSQL and an S3 (moto) started here, behind a
                           round-robin load balancer (see replicas.py)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backends  # noqa: E402
import replicas  # noqa: E402
from support import MAX_BODY_BYTES, REPO, Recorder, assert_completed, create_and_poll, new_key  # noqa: E402

SHIM_CONFIG_TEMPLATE = """\
[server]
max_body_bytes = {max_body}        # see MAX_BODY_BYTES in support.py
poll_after_ms = 100             # sent as openai-poll-after-ms on GET of unfinished videos

[backends.local]
kind = "local"
fps = 8                         # keep renders fast in tests
"""

SHIM_CONFIG = SHIM_CONFIG_TEMPLATE.format(max_body=MAX_BODY_BYTES)

# With a mapping backend: poll the fake provider often, and retry quickly.
MAPPED_CONFIG = """
[worker]
poll_interval_ms = 50
retry_base_ms = 50
retry_max_ms = 400

"""
STARTUP_TIMEOUT_S = 60
TEST_TIMEOUT_S = int(os.environ.get("SORA_CONTRACT_TEST_TIMEOUT", "300"))


def pytest_configure(config: pytest.Config) -> None:
    # Every SDK videos method is marked deprecated (API shutdown 2026-09-24); that is expected.
    config.addinivalue_line("filterwarnings", "ignore:The Sora API is scheduled:DeprecationWarning")


@dataclass
class Shim:
    url: str  # root, e.g. http://127.0.0.1:1234
    data_dir: Optional[Path] = None
    stderr_path: Optional[Path] = None
    proc: Optional[subprocess.Popen] = None

    @property
    def base_url(self) -> str:  # what an SDK client is pointed at
        return self.url + "/v1"

    def stderr_tail(self, lines: int = 200) -> str:
        if not self.stderr_path or not self.stderr_path.exists():
            return ""
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


_STATE: dict = {}


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory):
    external = os.environ.get("SORA_SHIM_URL")
    if external:
        yield Shim(url=external.rstrip("/"))
        return

    binary = Path(os.environ.get("SORA_SHIM_BIN", REPO / "target" / "debug" / "sora-shim"))
    if not binary.exists():
        pytest.fail(f"sora-shim binary not found at {binary}: run `cargo build` or set SORA_SHIM_BIN", pytrace=False)

    tmp = tmp_path_factory.mktemp("shim")
    try:
        fake = backends.start_fake(tmp)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"could not start the fake provider for {backends.describe()}: {e}", pytrace=False)
    _STATE["fake"] = fake
    data_dir = tmp / "data"
    data_dir.mkdir()
    config = tmp / "sora-shim.toml"
    text = SHIM_CONFIG
    env = dict(os.environ)
    if fake is not None:
        text += MAPPED_CONFIG + fake.backend_toml() + "\n" + backends.models_toml("prov")
        env.update(fake.env_for_shim)
    shared = []  # what the replicas share, stopped last
    if replicas.REPLICAS > 1:
        try:
            pg = replicas.Postgres(tmp)
            shared.append(pg)
            moto = replicas.Moto("videos")
            shared.append(moto)
        except Exception as e:  # noqa: BLE001
            for thing in shared:
                thing.stop()
            pytest.fail(f"could not start what the replicas share: {e}", pytrace=False)
        text += replicas.shared_config(moto.url)
        env.update(replicas.shared_env(pg))
    config.write_text(text)
    procs: list[tuple[subprocess.Popen, object, Path]] = []
    for n in range(max(1, replicas.REPLICAS)):
        replica_dir = data_dir if n == 0 else tmp / f"data{n}"
        replica_dir.mkdir(exist_ok=True)
        stderr_path = tmp / ("shim.stderr.log" if n == 0 else f"shim{n}.stderr.log")
        stderr_file = open(stderr_path, "wb")
        proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(replica_dir), "--config",
             str(config)],
            stdout=subprocess.PIPE, stderr=stderr_file, stdin=subprocess.DEVNULL, env=env,
        )
        procs.append((proc, stderr_file, stderr_path))
    shim = Shim(url="", data_dir=data_dir, stderr_path=procs[0][2], proc=procs[0][0])
    _STATE["shim"] = shim
    urls = []
    lb = None
    try:
        for n, (proc, _, _) in enumerate(procs):
            urls.append(backends._listening_on(proc, f"sora-shim replica {n}", STARTUP_TIMEOUT_S))
        if len(urls) > 1:
            lb = replicas.RoundRobin(urls)
            _STATE["balancer"] = lb
        shim.url = lb.url if lb else urls[0]
    except RuntimeError as e:
        for proc, stderr_file, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stderr_file.close()
        if fake is not None:
            fake.stop()
        for thing in reversed(shared):
            thing.stop()
        pytest.fail(f"{e}; its stderr is shown below", pytrace=False)
    failures = []
    try:
        yield shim
    finally:
        if lb is not None:
            lb.stop()
        for n, (proc, stderr_file, _) in enumerate(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    failures.append(f"sora-shim replica {n} did not exit within 20s of SIGTERM")
            stderr_file.close()
            if proc.returncode not in (0, -9) and not failures:
                failures.append(f"sora-shim replica {n} exited with {proc.returncode} after SIGTERM (expected 0)")
        if fake is not None:
            fake.stop()
        for thing in reversed(shared):
            thing.stop()
        if failures:
            pytest.fail("; ".join(failures) + "; its stderr is shown below", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    shim = _STATE.get("shim")
    if rep.failed and shim is not None and shim.stderr_path is not None:
        rep.sections.append(("sora-shim stderr (last 200 lines)", shim.stderr_tail()))
    fake = _STATE.get("fake")
    if rep.failed and fake is not None:
        rep.sections.append((f"fake {fake.spec.script} stderr (last 60 lines)", fake.stderr_tail()))


def pytest_report_header(config) -> str:
    return (f"sora-shim contract suite through {backends.describe()} (SORA_CONTRACT_BACKEND={backends.BACKEND}), "
            f"{replicas.REPLICAS} replica(s)")


@pytest.fixture(autouse=True)
def _test_time_guard(request):
    """Per-test wall-clock limit without plugins: SIGALRM raises in the (main) test thread."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"{request.node.nodeid} exceeded {TEST_TIMEOUT_S}s (SORA_CONTRACT_TEST_TIMEOUT)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- clients


@dataclass
class ClientFactory:
    shim: Shim
    recorders: list = field(default_factory=list)
    closers: list = field(default_factory=list)

    def _recorder(self, label: str) -> Recorder:
        rec = Recorder(label)
        self.recorders.append(rec)
        return rec

    def sync(self, key: Optional[str] = None, **kwargs) -> openai.OpenAI:
        """openai.OpenAI for `key` (fresh key if None). The client gets `.recorder` and `.api_key`."""
        key = key or new_key()
        rec = self._recorder(f"sync client {key}")
        http = openai.DefaultHttpxClient(event_hooks={"response": [rec.hook]})
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 60.0)
        client = openai.OpenAI(api_key=key, base_url=self.shim.base_url, http_client=http, **kwargs)
        client.recorder = rec  # type: ignore[attr-defined]
        self.closers.append(client.close)
        return client

    def async_(self, key: Optional[str] = None, **kwargs) -> openai.AsyncOpenAI:
        """openai.AsyncOpenAI; create it and `await client.close()` inside the same event loop."""
        key = key or new_key()
        rec = self._recorder(f"async client {key}")
        http = openai.DefaultAsyncHttpxClient(event_hooks={"response": [rec.ahook]})
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 60.0)
        client = openai.AsyncOpenAI(api_key=key, base_url=self.shim.base_url, http_client=http, **kwargs)
        client.recorder = rec  # type: ignore[attr-defined]
        return client

    def raw(self, key: Optional[str] = None, *, auth: bool = True) -> httpx.Client:
        """Plain httpx client on the shim root (paths start with /v1/...). key=None → fresh key;
        auth=False → no Authorization header at all."""
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {key or new_key()}"
        rec = self._recorder(f"raw httpx (auth={auth})")
        client = httpx.Client(base_url=self.shim.url, headers=headers, timeout=60.0,
                              event_hooks={"response": [rec.hook]})
        client.recorder = rec  # type: ignore[attr-defined]
        self.closers.append(client.close)
        return client

    def check(self) -> None:
        problems = [p for r in self.recorders for p in r.problems]
        if problems:
            raise AssertionError("response contract violations:\n  " + "\n  ".join(problems[:50]))


@pytest.fixture
def clients(shim):
    factory = ClientFactory(shim)
    yield factory
    for close in factory.closers:
        try:
            close()
        except Exception:
            pass
    factory.check()


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def client(clients, key) -> openai.OpenAI:
    return clients.sync(key)


@pytest.fixture
def raw(clients, key) -> httpx.Client:
    """Raw httpx client authenticated with the same key as `client`."""
    return clients.raw(key)


# --------------------------------------------------------------------------- shared source video


@dataclass
class Source:
    key: str
    video: object  # openai.types.Video (completed, sora-2, 720x1280, 4 s)
    mp4: bytes
    produced: Optional[str]  # its x-sora-shim-produced header


@pytest.fixture(scope="session")
def source(shim) -> Source:
    """One completed 720x1280 / 4 s sora-2 video shared (read-only) by the remix/edit/extend/
    character/content tests, with its MP4 bytes for upload tests. Tests that want to use the
    video id must use `source.key` (tenant isolation)."""
    factory = ClientFactory(shim)
    key = new_key("source")
    client = factory.sync(key)
    try:
        video = create_and_poll(client, prompt="A paper boat drifting on a calm lake", model="sora-2",
                                size="720x1280", seconds="4", poll_interval_ms=100)
        assert_completed(video)
        mp4 = client.videos.download_content(video.id, variant="video").content
        produced = client.videos.with_raw_response.retrieve(video.id).headers.get("x-sora-shim-produced")
        # (no factory.check() here: a response-schema violation would error every test using the
        # source video; the tests themselves report such violations)
    finally:
        client.close()
    return Source(key=key, video=video, mp4=mp4, produced=produced)


@pytest.fixture
def source_client(clients, source) -> openai.OpenAI:
    return clients.sync(source.key)


@pytest.fixture
def fake(shim):
    """The fake provider behind the shim (None with the local backend)."""
    return _STATE.get("fake")


def pytest_terminal_summary(terminalreporter) -> None:
    lb = _STATE.get("balancer")
    if lb is not None:
        terminalreporter.write_line(f"sora-shim: {replicas.describe(lb)}")
