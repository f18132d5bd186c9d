"""Load test of `nanochat-hf serve` on loopback: N concurrent streamed chat completions, batched vs one at a time.

    python benchmarks/serve_load.py                       # a tiny random model, 50 streams of 64 tokens
    python benchmarks/serve_load.py --model runs/quickstart-sft/final --streams 50 --max-tokens 128

The server (the real application, uvicorn on a free 127.0.0.1 port, in a thread) and the clients (httpx,
asyncio) share this process. Every stream asks for `--max-tokens` tokens and the model's stop tokens are
masked, so every request does the same work whatever the model says. It runs twice: with
`--max-batch-size` (default 8) and with batch size 1 (the baseline: one request at a time), and prints for
each the number of errors, the total tokens/s, the p50/p95 latency of a whole request and of its first token,
and the ratio batched / baseline. Any error (a status other than 200, a stream without [DONE]) is counted and
makes the script exit 1.
"""

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time

import httpx
import torch
from transformers import LogitsProcessor

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.chat.engine import ChatEngine, load_chat_model
from nanochat_hf.chat.generation import configure_chat_generation
from nanochat_hf.embedded_corpus import iter_embedded_documents
from nanochat_hf.serve.app import ServeLimits, create_app
from nanochat_hf.serve.server import bind, make_server, url_of
from nanochat_hf.tokenizer import train_tokenizer


class NoStop(LogitsProcessor):
    """Masks the stop tokens: every reply runs to its token budget."""

    def __init__(self, tokenizer):
        self.ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|assistant_end|>", "<|bos|>")]

    def __call__(self, input_ids, scores):
        scores[:, self.ids] = -float("inf")
        return scores


def tiny_model(depth: int):
    tokenizer = train_tokenizer(iter_embedded_documents(max_docs=300), vocab_size=1024, show_progress=False)
    torch.manual_seed(0)
    model = NanoChatHFForCausalLM(NanoChatHFConfig.from_depth(depth, vocab_size=len(tokenizer), sequence_len=512))
    with torch.no_grad():  # nanochat zero-inits the head and projections; random weights exercise everything
        for parameter in model.parameters():
            parameter.normal_(0, 0.02)
    configure_chat_generation(model, tokenizer)
    return model.eval(), tokenizer


class Server:
    def __init__(self, app):
        self.sock = bind("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self.server = make_server(app, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self):
        self.server.should_exit = True
        self.thread.join()
        self.sock.close()


async def one_stream(client: httpx.AsyncClient, url: str, index: int, max_tokens: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": f"Request {index}: tell me about the number {index}."}],
        "stream": True,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    tokens, done = 0, False
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return {"error": f"status {response.status_code}: {(await response.aread())[:200]!r}"}
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            if "error" in chunk:
                return {"error": chunk["error"]["message"]}
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    if not done:
        return {"error": "the stream ended without [DONE]"}
    return {"latency": time.perf_counter() - start, "first_token": first or 0.0, "tokens": tokens}


async def load(url: str, streams: int, max_tokens: int) -> tuple[list[dict], float]:
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, url, i, max_tokens) for i in range(streams)))
        return list(results), time.perf_counter() - start


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(engine, tokenizer, batch_size: int, args) -> dict:
    limits = ServeLimits(max_tokens=args.max_tokens, max_batch_size=batch_size, max_concurrent=args.streams)
    server = Server(create_app(engine, "bench", limits, generate_kwargs={"logits_processor": [NoStop(tokenizer)]}))
    try:
        results, elapsed = asyncio.run(load(server.url, args.streams, args.max_tokens))
    finally:
        server.stop()
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    latencies = [r["latency"] for r in ok] or [0.0]
    firsts = [r["first_token"] for r in ok] or [0.0]
    summary = {
        "batch_size": batch_size,
        "errors": len(errors),
        "tokens_per_s": sum(r["tokens"] for r in ok) / elapsed,
        "latency_p50": statistics.median(latencies),
        "latency_p95": percentile(latencies, 0.95),
        "first_token_p50": statistics.median(firsts),
        "first_token_p95": percentile(firsts, 0.95),
        "seconds": elapsed,
    }
    print(
        f"batch size {batch_size:>2}: {args.streams} streams x {args.max_tokens} tokens in {elapsed:.1f}s, "
        f"errors {len(errors)}, {summary['tokens_per_s']:.0f} tokens/s, latency p50 {summary['latency_p50']:.2f}s "
        f"p95 {summary['latency_p95']:.2f}s, first token p50 {summary['first_token_p50']:.2f}s "
        f"p95 {summary['first_token_p95']:.2f}s",
        flush=True,
    )
    for error in errors[:5]:
        print(f"  error: {error}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved chat model folder (default: a tiny random model built here)")
    parser.add_argument("--depth", type=int, default=2, help="depth of the tiny model")
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-baseline", action="store_true", help="only the batched run")
    args = parser.parse_args(argv)

    if args.model:
        model, tokenizer = load_chat_model(args.model, device=args.device)
    else:
        model, tokenizer = tiny_model(args.depth)
    engine = ChatEngine(model, tokenizer)
    print(
        f"model: {args.model or f'tiny random d{args.depth}'}, device {next(model.parameters()).device}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    batched = run(engine, tokenizer, args.max_batch_size, args)
    failed = batched["errors"]
    if not args.skip_baseline and args.max_batch_size != 1:
        baseline = run(engine, tokenizer, 1, args)
        failed += baseline["errors"]
        print(
            f"batched / one at a time: tokens/s x{batched['tokens_per_s'] / baseline['tokens_per_s']:.2f}, "
            f"p50 latency x{batched['latency_p50'] / baseline['latency_p50']:.2f}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
