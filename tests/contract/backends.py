"""Which backend the contract suite runs through, and what that backend can do.

`SORA_CONTRACT_BACKEND` picks it: `local` (default, the built-in renderer) or the name of a built-in mapping
(`openai`, `runway`, `replicate`, `fal`, `veo-gemini`, `veo-vertex`, `seedance`, `comfyui`). For a mapping, the
suite starts that provider's fake from tests/fakes/ and a shim whose Sora models all route to it, so every test
talks to the shim exactly as a legacy client would while the videos are made by the fake provider.

What a backend offers is read from the mapping file itself (`[capabilities]`), never restated here: a test of
an operation the backend lacks checks the shim's 400 instead, and file checks compare against what the shim
says was produced (`x-sora-shim-produced`), since a provider may round a size or a length.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import vertex_key  # noqa: E402  (tests/fakes/vertex_key.py)

REPO = Path(__file__).resolve().parents[2]
FAKES = REPO / "tests" / "fakes"
BACKEND = os.environ.get("SORA_CONTRACT_BACKEND", "local")
FAKE_KEY = "contract-provider-key"
SECRET_ENV = "SORA_SHIM_CONTRACT_PROVIDER_SECRET"

# The Sora model catalogue the shim ships with (src/default_config.toml); every entry routes to the backend.
SORA2_SIZES = ["720x1280", "1280x720"]
PRO_SIZES = SORA2_SIZES + ["1024x1792", "1792x1024", "1080x1920", "1920x1080"]
MODELS = {
    "sora-2": SORA2_SIZES,
    "sora-2-2025-10-06": SORA2_SIZES,
    "sora-2-2025-12-08": SORA2_SIZES,
    "sora-2-pro": PRO_SIZES,
    "sora-2-pro-2025-10-06": PRO_SIZES,
}
ALL_SECONDS = ["4", "8", "12", "16", "20"]


@dataclass(frozen=True)
class FakeSpec:
    script: str  # tests/fakes/<script>.py
    model: str  # the provider model the backend is configured with
    secret: Optional[str]  # the mapping's secret name ([auth] secrets), None for no credentials
    settings: str = ""  # more backend keys (TOML)


def _specs() -> dict[str, FakeSpec]:
    """tests/fakes/providers.toml, the table the Rust tests read too."""
    with open(FAKES / "providers.toml", "rb") as f:
        table = tomllib.load(f)
    specs = {}
    for mapping, p in table.items():
        settings = "\n".join(s for s in (p.get("settings", "").strip().replace("{repo}", str(REPO)),
                                          p.get("contract", "")) if s)
        specs[mapping] = FakeSpec(p["fake"], p["model"], p.get("secret"), settings)
    return specs


SPECS = _specs()


@dataclass
class Capabilities:
    name: str
    operations: set[str]
    size_policy: str = "exact"  # exact (local) | reject | nearest
    sizes: list[str] = field(default_factory=list)
    seconds_policy: str = "exact"
    seconds: list[str] = field(default_factory=list)
    images: str = "any"  # any (local) | data_uri | base64 | none
    characters: bool = True

    @property
    def local(self) -> bool:
        return self.name == "local"

    def offers(self, operation: str) -> bool:
        return operation in self.operations

    def refuses_size(self, size: str) -> bool:
        return self.size_policy == "reject" and size not in self.sizes

    def refuses_seconds(self, seconds: str) -> bool:
        return self.seconds_policy == "reject" and seconds not in self.seconds

    def takes_uploaded_image(self) -> bool:
        return self.images != "none"

    def takes_image_url(self, url: str) -> bool:
        """A JSON `image_url`: data URLs become bytes at the shim; https URLs are passed on only as URLs."""
        if url.startswith("data:"):
            return self.images != "none"
        return self.images in ("any", "data_uri")


def capabilities(name: str = BACKEND) -> Capabilities:
    if name == "local":
        return Capabilities("local", {"create", "remix", "edit", "extend"})
    caps = tomllib.loads((REPO / "mappings" / f"{name}.toml").read_text())["capabilities"]
    operations = set(caps["operations"])
    narrowed = re.search(r"^operations = (\[.*\])$", SPECS[name].settings, re.M) if name in SPECS else None
    if narrowed:  # the backend config offers fewer than the mapping
        operations &= set(json.loads(narrowed.group(1)))
    return Capabilities(
        name,
        operations,
        caps.get("size_policy", "reject"),
        list(caps.get("sizes", {})),
        caps.get("seconds_policy", "reject"),
        list(caps.get("seconds", {})),
        caps.get("images", "none"),
        characters=False,
    )


CAPS = capabilities()


def describe() -> str:
    return "the built-in local backend" if CAPS.local else f"the {BACKEND} mapping through its fake"


# --------------------------------------------------------------------------- starting a fake provider


class StartedFake:
    def __init__(self, spec: FakeSpec, tmp: Path):
        self.spec = spec
        self.env_for_shim: dict[str, str] = {}
        env = dict(os.environ)
        secret_value = FAKE_KEY
        if spec.script == "veo_vertex":
            _, public = vertex_key.mint(tmp)
            env["VERTEX_PUBLIC_KEY_PEM"] = str(public)
        self.stderr_path = tmp / f"fake-{spec.script}.stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKES / f"{spec.script}.py"), "--port", "0", "--key", FAKE_KEY],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, env=env,
        )
        self.url = _listening_on(self.proc, f"fake {spec.script}")
        if spec.script == "veo_vertex":
            secret_value = json.dumps({
                "type": "service_account",
                "client_email": "contract@contract-project.iam.gserviceaccount.com",
                "private_key": (tmp / "sa.pem").read_text(),
                "token_uri": f"{self.url}/token",
            })
        if spec.secret:
            self.env_for_shim[SECRET_ENV] = secret_value

    def backend_toml(self) -> str:
        lines = [
            "[backends.prov]",
            'kind = "mapping"',
            f'mapping = "{BACKEND}"',
            f'base_url = "{self.url}"',
            f'model = "{self.spec.model}"',
            "timeout_secs = 20",
        ]
        if self.spec.secret:
            lines.append(f'secrets = {{ {self.spec.secret} = "{SECRET_ENV}" }}')
        if self.spec.settings:
            lines.append(self.spec.settings)
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])


def start_fake(tmp: Path) -> Optional[StartedFake]:
    if CAPS.local:
        return None
    if BACKEND not in SPECS:
        raise RuntimeError(f"SORA_CONTRACT_BACKEND={BACKEND!r}: use local or one of {', '.join(SPECS)}")
    return StartedFake(SPECS[BACKEND], tmp)


def models_toml(backend: str) -> str:
    out = []
    for name, sizes in MODELS.items():
        out.append(f'[models."{name}"]\nbackend = "{backend}"\nsizes = {json.dumps(sizes)}\n'
                   f"seconds = {json.dumps(ALL_SECONDS)}\n")
    return "\n".join(out)


READY_RE = re.compile(r"^listening on (http://127\.0\.0\.1:\d+)\s*$")


def _listening_on(proc: subprocess.Popen, what: str, timeout: float = 60.0) -> str:
    """Waits for the one `listening on http://127.0.0.1:PORT` line; then keeps draining stdout."""
    lines: "queue.Queue[Optional[bytes]]" = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name=f"{what}-stdout", daemon=True).start()
    try:
        first = lines.get(timeout=timeout)
    except queue.Empty:
        first = None
    m = READY_RE.match(first.decode(errors="replace")) if first else None
    if not m:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what} did not print 'listening on http://127.0.0.1:PORT' within {timeout:.0f}s "
                           f"(first stdout line: {first!r}, exit code: {proc.poll()})")
    return m.group(1)
