"""`nanochat-hf serve` as a command: its flags' errors, a busy port, and a graceful shutdown on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from chat_helpers import save_tiny_model

from nanochat_hf.cli import main as cli_main


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("serve-cli") / "model", random_weights=True)


def test_flag_errors(model_dir, tmp_path, capsys):
    assert cli_main(["serve", str(model_dir), "--max-batch-size", "0"]) == 2
    assert "--max-batch-size must be positive" in capsys.readouterr().err
    assert cli_main(["serve", str(model_dir), "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err
    assert cli_main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_busy_port_is_reported_before_the_model_loads(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_main(["serve", str(tmp_path / "not-loaded"), "--port", str(port)]) == 2
    assert f"--host 127.0.0.1 --port {port}: cannot listen there (the port is in use)" in capsys.readouterr().err


@pytest.mark.parametrize("stop_signal, status", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)])
def test_serves_then_shuts_down_gracefully(model_dir, stop_signal, status):
    """The reply streaming when the signal comes is finished; then SIGTERM ends the process with that signal
    (uvicorn raises it again after its shutdown), Ctrl-C with status 130, without a traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "nanochat_hf.cli",
        "serve",
        str(model_dir),
        "--port",
        "0",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = process.stdout.readline()
        assert "nanochat-hf serve:" in banner and "http://127.0.0.1:" in banner, process.stderr.read()
        url = banner.split(" at ")[1].split()[0]
        while True:  # the banner comes just before uvicorn starts accepting
            try:
                assert httpx.get(f"{url}/health").json()["status"] == "ok"
                break
            except httpx.ConnectError:
                continue
        request = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 200}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=request, timeout=60) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            process.send_signal(stop_signal)  # while the reply streams: it is let finish
            rest = [line[6:] for line in lines if line.startswith("data: ")]
        assert rest[-1] == "[DONE]" and json.loads(rest[-2])["choices"][0]["finish_reason"] in ("stop", "length")
        assert process.wait(60) == status
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
