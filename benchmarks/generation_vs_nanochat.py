"""Chat generation speed: our ChatEngine (its own decode loop) against nanochat's engine loop, same model, same process.

    python benchmarks/generation_vs_nanochat.py --depth 4 --max-tokens 128 --batch-sizes 1 8

The baseline is nanochat's engine loop (`Engine.generate` in nanochat/engine.py) written again here over
the same model: one prefill of the prompt at batch 1, the cache repeated to `num_samples` rows, then one
forward per step on the last token of every row, sampling with temperature and top-k, and the per-row tool
state machine (forced-token queue, python block, calculator). Ours is `ChatEngine.generate_batch` with the
prompt repeated `batch` times (what `nanochat-hf serve` runs), and at batch 1 also `ChatEngine.generate` (what
`nanochat-hf chat` runs); both decode in `nanochat_hf/chat/decode_loop.py` (a preallocated KV cache, one
prefill of a prompt shared by all rows, logits of the last position only, one host sync per step), the
stop-token masking running as a logits processor. Stop tokens are masked on both
sides so every row generates exactly `--max-tokens` tokens; runs alternate (ours, baseline, ours, ...) and
the best round counts. Prints tokens/s (all rows) for each and the ratio ours / baseline (higher is better).
"""

import argparse
import time
from collections import deque

import torch
import torch.nn.functional as F
from transformers import DynamicCache, LogitsProcessor

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.chat.calculator import run_calculator
from nanochat_hf.chat.engine import ChatEngine
from nanochat_hf.chat.generation import configure_chat_generation
from nanochat_hf.embedded_corpus import iter_embedded_documents
from nanochat_hf.tokenizer import train_tokenizer


class NoStop(LogitsProcessor):
    def __init__(self, stop_ids):
        self.stop_ids = stop_ids

    def __call__(self, input_ids, scores):
        scores[:, self.stop_ids] = -float("inf")
        return scores


def sample_next(logits, generator, temperature: float, top_k: int | None):
    """nanochat's sampling: argmax at temperature 0, else top-k of the logits, softmax, one draw per row."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if top_k:
        values, indices = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1)
        choice = torch.multinomial(F.softmax(values / temperature, dim=-1), 1, generator=generator)
        return indices.gather(1, choice)
    return torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=generator)


class Row:
    def __init__(self):
        self.tokens, self.forced, self.in_python, self.expression = [], deque(), False, []


@torch.inference_mode()
def nanochat_loop(model, engine, prompt, num_samples, max_tokens, temperature, top_k, stop_ids, seed=42):
    """nanochat's engine loop over our model (see the module docstring); returns each row's tokens."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    special = engine.special
    cache = DynamicCache(config=model.config)
    output = model(input_ids=torch.tensor([prompt], device=device), cache=cache, use_cache=True)
    logits = output.logits[:, -1, :].expand(num_samples, -1)
    if num_samples > 1:
        cache.batch_repeat_interleave(num_samples)
    rows = [Row() for _ in range(num_samples)]
    for _ in range(max_tokens):
        logits = logits.clone()
        logits[:, stop_ids] = -float("inf")  # equal work on both sides: no row ends early
        sampled = sample_next(logits, generator, temperature, top_k)[:, 0].tolist()
        column = []
        for index, row in enumerate(rows):
            token = row.forced.popleft() if row.forced else sampled[index]
            column.append(token)
            row.tokens.append(token)
            if token == special["<|python_start|>"]:
                row.in_python, row.expression = True, []
            elif token == special["<|python_end|>"] and row.in_python:
                row.in_python = False
                result, _ = run_calculator(engine.tokenizer.decode(row.expression))
                row.forced.extend(
                    [special["<|output_start|>"], *engine.encode_text(result), special["<|output_end|>"]]
                )
            elif row.in_python:
                row.expression.append(token)
        ids = torch.tensor(column, device=device).unsqueeze(1)
        logits = model(input_ids=ids, cache=cache, use_cache=True).logits[:, -1, :]
    return [row.tokens for row in rows]


def ours(engine, messages, num_samples, max_tokens, temperature, top_k, stop_ids, batched=True):
    settings = dict(
        max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, logits_processor=[NoStop(stop_ids)]
    )
    if not batched:
        return [engine.generate(messages, seed=42, **settings).token_ids]
    return [reply.token_ids for reply in engine.generate_batch([messages] * num_samples, seed=42, **settings)]


def timed(function, device) -> tuple[float, int]:
    start = time.perf_counter()
    rows = function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, sum(len(tokens) for tokens in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=4096, help="of the tokenizer trained here (= the model's)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    tokenizer = train_tokenizer(iter_embedded_documents(max_docs=600), vocab_size=args.vocab_size, show_progress=False)
    torch.manual_seed(0)
    config = NanoChatHFConfig.from_depth(args.depth, vocab_size=len(tokenizer), sequence_len=1024)
    model = NanoChatHFForCausalLM(config)
    with torch.no_grad():  # nanochat zero-inits the head and projections; random weights exercise everything
        for parameter in model.parameters():
            parameter.normal_(0, 0.02)
    configure_chat_generation(model, tokenizer)
    model = model.to(device=device, dtype=getattr(torch, args.dtype)).eval()
    engine = ChatEngine(model, tokenizer)
    messages = [{"role": "user", "content": "Tell me a story about a calculator that learned to count."}]
    prompt = engine.prompt_ids(messages)
    stop_ids = [engine.special["<|assistant_end|>"], engine.special["<|bos|>"]]
    print(
        f"d{args.depth} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, vocab {len(tokenizer)}), "
        f"{args.dtype} on {device}, torch threads {torch.get_num_threads()}, prompt {len(prompt)} tokens, "
        f"{args.max_tokens} new tokens per row, temperature {args.temperature}, top-k {args.top_k}"
    )
    for batch in args.batch_sizes:
        sides = {
            "ours": lambda b=batch: ours(engine, messages, b, args.max_tokens, args.temperature, args.top_k, stop_ids),
            "nanochat loop": lambda b=batch: nanochat_loop(
                model, engine, prompt, b, args.max_tokens, args.temperature, args.top_k, stop_ids
            ),
        }
        if batch == 1:
            sides["ours (generate)"] = lambda: ours(
                engine, messages, 1, args.max_tokens, args.temperature, args.top_k, stop_ids, batched=False
            )
        for function in sides.values():  # warm-up
            function()
        best = {name: 0.0 for name in sides}
        for _ in range(args.rounds):
            for name, function in sides.items():
                seconds, tokens = timed(function, device)
                assert tokens == batch * args.max_tokens, (name, tokens)
                best[name] = max(best[name], tokens / seconds)
        baseline = best["nanochat loop"]
        for name in sides:
            if name != "nanochat loop":
                print(
                    f"batch {batch:>2}: {name:<15} {best[name]:8.0f} tokens/s, nanochat loop {baseline:8.0f} tokens/s, "
                    f"{name} / nanochat loop = {best[name] / baseline:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
