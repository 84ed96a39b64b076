"""Done-when 5 of issue 13 for notebooks: the live notebook, executed, shows no credential anywhere in its outputs.

``notebooks/05_live.ipynb`` is run with papermill with distinctive sandbox credentials
(its ``sandbox_key``/``sandbox_secret`` parameters, which it puts in the environment for the
adapter as a real key would be); every output of every cell (text, HTML, errors) is then
searched for them. The parameters cell itself holds them as source, which is not output.
The store, journals and logs are scanned in tests/test_session_live.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tradebook.notebook import execute

ROOT = Path(__file__).resolve().parents[1]
KEY_ID, SECRET_KEY = "PKNOTEBOOKSCANKEY0705", "sk-notebook-scan-secret-4b1d9e"


def outputs_text(executed: Path) -> list[str]:
    cells = json.loads(executed.read_text())["cells"]
    return [json.dumps(cell.get("outputs", [])) for cell in cells]


def test_the_executed_live_notebook_shows_no_credential_and_leaves_no_port(tmp_path):
    executed = execute(ROOT / "notebooks" / "05_live.ipynb", tmp_path / "05_live.ipynb",
                       parameters={"sandbox_key": KEY_ID, "sandbox_secret": SECRET_KEY}, timeout=120)
    texts = outputs_text(executed)
    assert any("PA-SANDBOX-05" in t for t in texts)  # the outputs were written and read: the scan can fail
    source = executed.read_text()
    assert KEY_ID in source  # injected as a parameter: the executed notebook did run with these values
    for secret in (KEY_ID, SECRET_KEY):
        assert not [t[:200] for t in texts if secret in t], f"{secret[:6]}... appears in a cell's output"
    # and it leaves no port behind: the sandbox it started answers no more
    port = int(source.split("http://127.0.0.1:")[1].split("/")[0].split(":")[0].split('"')[0].split("\\")[0])
    with socket.socket() as probe:  # the sandbox was stopped by the notebook: nothing answers there
        assert probe.connect_ex(("127.0.0.1", port)) != 0
