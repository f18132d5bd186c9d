"""transformers' own serving commands with our folders, offline on loopback.

- `transformers chat MODEL URL` is an OpenAI client: pointed at `nanochat-hf serve`, it chats with the
  calculator tool loop running on our server.
- `transformers serve` loads a model class by the name in `config.architectures`, so it serves our folders once
  converted to transformers' built-in NanoChat (`nanochat-hf convert --to native`): the chat template comes
  along, the tool loop does not.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from chat_helpers import chat_tokenizer
from serve_helpers import ScriptedByPrompt, calculator_script, start_server, tiny_engine

from nanochat_hf.cli import main as cli_main


pytestmark = pytest.mark.skipif(
    shutil.which("transformers") is None, reason="the transformers command is not installed"
)
REPO = Path(__file__).resolve().parents[1]


def loopback_env() -> dict:
    # huggingface_hub's client refuses every URL in offline mode, loopback included; these commands only
    # talk to a server on 127.0.0.1 (and load local folders).
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    return {**env, "PYTHONPATH": str(REPO), "HF_HUB_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}


def test_transformers_chat_talks_to_our_server_with_the_tool_loop(tmp_path):
    engine = tiny_engine(tmp_path / "model")
    tokenizer = chat_tokenizer()
    server = start_server(
        engine, logits_processor=[ScriptedByPrompt(tokenizer, "calculate", calculator_script(tokenizer))]
    )
    try:
        result = subprocess.run(
            ["transformers", "chat", "tiny-chat", server.url, "max_new_tokens=60"],
            input="please calculate 6 times 7\n!exit\n",
            capture_output=True,
            text=True,
            timeout=120,
            env=loopback_env(),
            cwd=tmp_path,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Let me compute: <<6*7=42>> so the answer is 42." in result.stdout


def test_transformers_serve_serves_a_native_conversion(tmp_path):
    engine = tiny_engine(tmp_path / "model", rotary_dtype="float32")  # as the built-in model computes it
    assert cli_main(["convert", str(tmp_path / "model"), str(tmp_path / "native"), "--to", "native"]) == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        "transformers",
        "serve",
        str(tmp_path / "native"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(3000):  # loading takes a while on a small CPU
            if process.poll() is not None:
                raise AssertionError(f"transformers serve exited: {process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        messages = [{"role": "user", "content": "hello there"}]
        body = {"model": str(tmp_path / "native"), "messages": messages, "max_tokens": 8, "temperature": 0}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
        # The same prompt (our chat template) and the same greedy tokens as our engine.
        expected = engine.generate(messages, temperature=0, max_new_tokens=8)
        assert reply["usage"]["prompt_tokens"] == len(engine.prompt_ids(messages))
        assert reply["choices"][0]["message"]["content"] == expected.text
    finally:
        process.terminate()
        process.wait(60)
