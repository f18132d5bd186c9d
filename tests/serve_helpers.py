"""A real `nanochat-hf serve` application on a free loopback port, in a thread of the test process.

The model is the chat tests' tiny NanoChatHFForCausalLM (random weights). `ScriptedByPrompt` lets a test
make the model write a given reply (a calculator call, say) for conversations that contain a trigger
phrase: a logits processor that leaves only the scripted token possible at each step, for those rows only;
the engine, its tool loop, the scheduler and the HTTP stack all run for real.
"""

import threading
import time

import httpx
import torch
from chat_helpers import chat_tokenizer, save_tiny_model
from transformers import LogitsProcessor

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.chat.engine import ChatEngine
from nanochat_hf.serve.app import ServeLimits, create_app
from nanochat_hf.serve.server import bind, make_server, url_of


MODEL_NAME = "tiny-chat"


class ScriptedByPrompt(LogitsProcessor):
    """Rows whose prompt contains `trigger` are forced through `script` (token ids), one token per step."""

    def __init__(self, tokenizer, trigger: str, script: list[int]):
        self.tokenizer, self.trigger, self.script = tokenizer, trigger, script
        self.width = None
        self.scripted_rows = []

    def __call__(self, input_ids, scores):
        if self.width is None or input_ids.shape[1] != self.width + self.step + 1:  # a new generate() call
            self.width, self.step = input_ids.shape[1], 0
            texts = self.tokenizer.batch_decode(input_ids)
            self.scripted_rows = [row for row, text in enumerate(texts) if self.trigger in text]
        else:
            self.step += 1
        if self.step < len(self.script):
            for row in self.scripted_rows:
                forced = torch.full_like(scores[row], -float("inf"))
                forced[self.script[self.step]] = 0.0
                scores[row] = forced
        return scores


class SlowEndless(LogitsProcessor):
    """The model never ends its turn (its stop tokens are banned) and each step takes at least `pause` seconds:
    a reply that runs until its token budget, slowly enough for a test to act while it streams."""

    def __init__(self, tokenizer, pause: float = 0.005):
        self.stop_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|assistant_end|>", "<|bos|>")]
        self.pause = pause

    def __call__(self, input_ids, scores):
        time.sleep(self.pause)
        scores[:, self.stop_ids] = -float("inf")
        return scores


def calculator_script(tokenizer, wrong_output_tokens: int = 0) -> list[int]:
    """'Let me compute: <<6*7=42>> so the answer is 42.' as the model writes it (the tool output is forced by
    the engine; the script holds placeholders of the same length there)."""

    def special(name):
        return tokenizer.convert_tokens_to_ids(f"<|{name}|>")

    def text(value):
        return tokenizer.encode(value, add_special_tokens=False, split_special_tokens=True)

    output = [special("output_start"), *text("42"), special("output_end")]
    return [
        *text("Let me compute: "),
        special("python_start"),
        *text("6*7"),
        special("python_end"),
        *[text("x")[0]] * len(output),
        *text(" so the answer is 42."),
        special("assistant_end"),
    ]


def tiny_engine(folder, **config_overrides) -> ChatEngine:
    save_tiny_model(folder, random_weights=True, **config_overrides)
    return ChatEngine(NanoChatHFForCausalLM.from_pretrained(folder).eval(), chat_tokenizer())


class RunningServer:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a thread; `stop()` shuts it down gracefully."""

    def __init__(self, app):
        self.app = app
        self.sock = bind("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self.server = make_server(app, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/health").json()

    def wait_for(self, condition, what: str, attempts: int = 500):
        """Poll /health until `condition(stats)` holds (a wait, not a timed assertion)."""
        for _ in range(attempts):
            stats = self.stats()
            if condition(stats):
                return stats
            time.sleep(0.02)
        raise AssertionError(f"the server never reached: {what} (last /health: {stats})")

    def stop(self):
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


def start_server(engine, limits: ServeLimits | None = None, **generate_kwargs) -> RunningServer:
    return RunningServer(create_app(engine, MODEL_NAME, limits, generate_kwargs=generate_kwargs))
