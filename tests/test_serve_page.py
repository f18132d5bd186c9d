"""The chat page in a real headless Chromium, against a real server on a loopback port.

Skipped where Debian's `chromium` / `chromium-driver` are not installed (`.ci/run` installs them). The
screenshot is saved under the test's temp dir; with NANOCHAT_HF_SCREENSHOT=PATH it is also copied there
(how docs/images/serve.png is made).
"""

import os
import shutil

import pytest
from browser_helpers import HeadlessChromium
from chat_helpers import chat_tokenizer
from serve_helpers import ScriptedByPrompt, SlowEndless, calculator_script, start_server, tiny_engine

from nanochat_hf.serve.app import ServeLimits


pytestmark = pytest.mark.skipif(not HeadlessChromium.available(), reason="chromium and chromedriver are not installed")

DONE = "document.querySelectorAll('.message.assistant[data-state=\"done\"]').length"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    engine = tiny_engine(tmp_path_factory.mktemp("serve-page") / "model")
    tokenizer = chat_tokenizer()
    # Conversations asking to "calculate" get the scripted reply with a calculator call; any other reply runs
    # slowly until its budget, so that the stop button has something to stop.
    processors = [SlowEndless(tokenizer), ScriptedByPrompt(tokenizer, "calculate", calculator_script(tokenizer))]
    running = start_server(engine, ServeLimits(max_tokens=1024), logits_processor=processors)
    yield running
    running.stop()


@pytest.fixture
def browser(tmp_path):
    chromium = HeadlessChromium(tmp_path / "profile")
    yield chromium
    chromium.quit()


def test_chat_page_streams_a_reply_with_a_tool_call_and_stops(server, browser, tmp_path):
    browser.open(server.url + "/")
    assert browser.run("return document.title;") == "nanochat-hf"
    # Self-contained: nothing to fetch from anywhere, and nothing was.
    assert browser.run("return document.querySelectorAll('script[src], link[href], img[src], iframe').length;") == 0
    origins = browser.run("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin);")
    assert set(origins) <= {server.url}

    browser.type("#prompt", "Please calculate 6 times 7.")
    browser.click("#send")
    browser.wait_for(f"{DONE} === 1", "the first reply finished")
    reply = browser.run("return document.querySelector('.message.assistant').innerText;")
    assert reply.startswith("Let me compute:") and reply.endswith("so the answer is 42.")
    assert browser.run("return document.querySelector('.tool .expression').textContent;") == "6*7"
    assert browser.run("return document.querySelector('.tool .result').textContent;") == "42"
    screenshot = tmp_path / "chat.png"
    browser.screenshot(screenshot)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("NANOCHAT_HF_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["NANOCHAT_HF_SCREENSHOT"])

    # A second turn (the conversation so far is sent back), stopped while it streams.
    cancelled = server.stats()["cancelled"]
    browser.clear("#maxtokens")
    browser.type("#maxtokens", "1000")
    browser.type("#prompt", "Now tell me a long story.")
    browser.click("#send")
    browser.wait_for("document.querySelectorAll('.message.assistant')[1].textContent.length > 3", "tokens streaming")
    browser.click("#stop")
    browser.wait_for(f"{DONE} === 2", "the second reply stopped")
    assert browser.run("return document.querySelector('.message.note').textContent;") == "(stopped)"
    server.wait_for(lambda s: s["active"] == 0 and s["cancelled"] == cancelled + 1, "the stopped stream cancelled")
    assert browser.run("return document.querySelectorAll('.message.user').length;") == 2
    assert not browser.run("return document.querySelector('#send').disabled;")
