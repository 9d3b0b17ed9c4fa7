"""Mints the RSA key pair of a test Vertex AI service account (the shim signs its token requests with the
private key; tests/fakes/veo_vertex.py checks them with the public one). Used by the contract suite (imported)
and by the Rust tests (`python3 tests/fakes/vertex_key.py DIR`): writes DIR/sa.pem and DIR/sa.pub.pem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def mint(directory: Path) -> tuple[Path, Path]:
    private, public = directory / "sa.pem", directory / "sa.pub.pem"
    for cmd in (["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(private)],
                ["openssl", "pkey", "-pubout", "-in", str(private), "-out", str(public)]):
        subprocess.run(cmd, check=True, capture_output=True)
    return private, public


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: vertex_key.py DIR")
    mint(Path(sys.argv[1]))
