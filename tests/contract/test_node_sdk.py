"""The official openai Node SDK (pinned in node/package.json, installed by .ci/test) against the same shim.

The Node SDK has no poll helper and sends multipart for create/edit/extend with bracketed keys
(`input_reference[image_url]`, `video[id]`); node/sdk.mjs drives every endpoint and asserts as it goes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from backends import CAPS
from support import new_key

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.mark.skipif(not CAPS.local, reason="the Node SDK run (remix, edit, extend, characters) checks the front door "
                                          "once, with the local backend")
def test_node_sdk_end_to_end(shim):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").exists():
        pytest.fail("node and tests/contract/node/node_modules are required: run `bash .ci/test`", pytrace=False)
    env = dict(os.environ, SORA_SHIM_BASE_URL=f"{shim.url}/v1", SORA_SHIM_KEY=new_key())
    run = subprocess.run([node, str(NODE_DIR / "sdk.mjs")], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "node sdk contract: ok" in run.stdout
