"""Pretraining data lane vs nanochat's loader: steady-state tokens/s and time to the first batch.

    python benchmarks/data_lane.py                                   # both packings, about a minute
    python benchmarks/data_lane.py --packing best_fit --batch 8 --seq-len 2048
    python benchmarks/data_lane.py --nanochat-repo /tmp/nanochat     # nanochat's own loader from a checkout
    python benchmarks/data_lane.py --data ~/.cache/nanochat/base_data --tokenizer ~/.cache/nanochat/tokenizer

Ours: `PretrainDataset` through `build_train_dataloader`, exactly what the Trainer iterates (8 data lanes,
collation into input_ids/labels/shift_labels). The reference is nanochat's loader loop: by default a
re-implementation written here from its algorithm (generation 1: row groups in order, 128 documents per
`encode_ordinary_batch` call with 4 threads, BOS prepended, a deque of tokens from which each batch pops
B*T + 1 tokens one by one; generation 2: a buffer of 1000 documents refilled 128 at a time, each row
filled by scanning the buffer for the largest document that fits, else cropping the shortest); with
`--nanochat-repo` nanochat's own functions are imported from a checkout (generation 1's
`tokenizing_distributed_data_loader_with_state` exists up to commit 16788ee, generation 2's best-fit
loader at HEAD). Both sides use the same tiktoken encoding of the same tokenizer.

Steady state: both loaders are warmed up (best-fit buffers full), then timed in alternating windows of
`--window` seconds; the ratio is ours / reference of the median tokens/s (rows x T per second). Ours runs
with `prefetch_rows=0` here, so the figure is the work per worker, not hidden by the background thread.
First batch: a fresh loader each time, alternating, median of `--repeats`; ours includes opening the
parquet files and building the encoder from the HF tokenizer.
"""

import argparse
import statistics
import sys
import time
import types
from collections import deque
from pathlib import Path

import torch
from bench_corpus import add_corpus_arguments, cpu_count, make_corpus, make_tokenizer

from nanochat_hf.data import PretrainDataset, build_train_dataloader
from nanochat_hf.data.encoding import tiktoken_encoding_for


NANOCHAT_THREADS, NANOCHAT_BATCH, NANOCHAT_BUFFER = 4, 128, 1000


# ---- the reference: nanochat's loader loop, re-implemented from its description


def _document_batches(paths):
    import pyarrow.parquet as pq

    while True:  # epochs
        for path in paths:
            parquet = pq.ParquetFile(path)
            for group in range(parquet.num_row_groups):
                texts = parquet.read_row_group(group).column("text").to_pylist()
                for start in range(0, len(texts), NANOCHAT_BATCH):
                    yield texts[start : start + NANOCHAT_BATCH]


def reference_stream(paths, encoding, bos, B, T):
    batches, stream, needed = _document_batches(paths), deque(), B * T + 1
    while True:
        while len(stream) < needed:
            for ids in encoding.encode_ordinary_batch(next(batches), num_threads=NANOCHAT_THREADS):
                ids.insert(0, bos)
                stream.extend(ids)
        tokens = [stream.popleft() for _ in range(needed)]
        scratch = torch.tensor(tokens, dtype=torch.long)
        yield scratch[:-1].view(B, T), scratch[1:].view(B, T)


def reference_best_fit(paths, encoding, bos, B, T):
    batches, buffer, capacity = _document_batches(paths), [], T + 1
    rows = torch.empty((B, capacity), dtype=torch.long)
    while True:
        for r in range(B):
            filled = 0
            while filled < capacity:
                while len(buffer) < NANOCHAT_BUFFER:
                    for ids in encoding.encode_ordinary_batch(next(batches), num_threads=NANOCHAT_THREADS):
                        ids.insert(0, bos)
                        buffer.append(ids)
                remaining, best, best_len = capacity - filled, -1, 0
                for i, doc in enumerate(buffer):
                    if best_len < len(doc) <= remaining:
                        best, best_len = i, len(doc)
                if best >= 0:
                    doc = buffer.pop(best)
                    rows[r, filled : filled + len(doc)] = torch.tensor(doc, dtype=torch.long)
                    filled += len(doc)
                else:
                    shortest = min(range(len(buffer)), key=lambda i: len(buffer[i]))
                    rows[r, filled:] = torch.tensor(buffer.pop(shortest)[:remaining], dtype=torch.long)
                    filled = capacity
        yield rows[:, :-1].clone(), rows[:, 1:].clone()


def nanochat_loaders(repo: str, paths, encoding):
    """nanochat's own loader functions from a checkout, fed our files and tokenizer."""
    sys.path.insert(0, str(Path(repo).resolve()))
    sys.modules.setdefault("rustbpe", types.ModuleType("rustbpe"))  # only used to train a tokenizer
    import nanochat.dataloader as loader
    from nanochat.tokenizer import RustBPETokenizer

    tokenizer = RustBPETokenizer(encoding, "<|bos|>")
    loader.list_parquet_files = lambda *args, **kwargs: [str(p) for p in paths]
    loader.get_tokenizer = lambda: tokenizer  # generation 1 fetches it itself
    found = {}
    if hasattr(loader, "tokenizing_distributed_data_loader_with_state"):

        def stream(paths_, encoding_, bos, B, T):
            for inputs, targets, _ in loader.tokenizing_distributed_data_loader_with_state(
                B, T, "train", device="cpu"
            ):
                yield inputs, targets

        found["stream"] = stream
    if hasattr(loader, "tokenizing_distributed_data_loader_with_state_bos_bestfit"):

        def best_fit(paths_, encoding_, bos, B, T):
            batches = loader.tokenizing_distributed_data_loader_with_state_bos_bestfit(
                tokenizer, B, T, "train", device="cpu"
            )
            for inputs, targets, _ in batches:
                yield inputs, targets

        found["best_fit"] = best_fit
    return found


# ---- measurement


def ours(corpus, tokenizer, packing, B, T, prefetch_rows=0, num_lanes=None):
    dataset = PretrainDataset(corpus, tokenizer, T, packing=packing, prefetch_rows=prefetch_rows, num_lanes=num_lanes)
    return iter(build_train_dataloader(dataset, B)), dataset


def first_batch_seconds(make) -> float:
    start = time.perf_counter()
    iterator = make()
    next(iterator)
    return time.perf_counter() - start


def window_tokens_per_second(iterator, tokens_per_batch: int, seconds: float) -> float:
    start, batches = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        next(iterator)
        batches += 1
    return batches * tokens_per_batch / (time.perf_counter() - start)


def warm_up(iterator, rows: int, B: int, label: str) -> None:
    start, batches = time.perf_counter(), -(-rows // B)
    for done in range(batches):
        next(iterator)
        if (done + 1) % max(1, batches // 4) == 0:
            print(
                f"    {label}: {done + 1}/{batches} warm-up batches ({time.perf_counter() - start:.0f} s)", flush=True
            )


def run_packing(args, packing, corpus, tokenizer, reference, train_files, encoding):
    B, T = args.batch, args.seq_len
    bos = tokenizer.bos_token_id
    print(f"\n== {packing} (B{B} T{T}, vocab {len(tokenizer)}) ==", flush=True)

    firsts = {"ours": [], "reference": []}
    for repeat in range(args.repeats):
        firsts["ours"].append(first_batch_seconds(lambda: ours(corpus, tokenizer, packing, B, T, 64)[0]))
        firsts["reference"].append(first_batch_seconds(lambda: reference(train_files, encoding, bos, B, T)))
        print(
            f"  first batch {repeat + 1}/{args.repeats}: ours {firsts['ours'][-1]:.2f} s, "
            f"reference {firsts['reference'][-1]:.2f} s",
            flush=True,
        )

    # Best fit has a long transient: the buffer slowly fills with documents longer than a row (they are
    # only ever cropped when they are the shortest), and until it has, little is cropped and rows are
    # cheap. Both sides are timed after `--equilibrium-rows` rows per buffer. Ours then uses one lane
    # (`--lanes`): a lane's work per row does not depend on how many lanes there are, but 8 lanes take 8
    # times as long to reach the equilibrium.
    lanes = args.lanes if packing == "best_fit" else None
    ours_iterator, dataset = ours(corpus, tokenizer, packing, B, T, num_lanes=lanes)
    reference_iterator = reference(train_files, encoding, bos, B, T)
    per_buffer = args.equilibrium_rows if packing == "best_fit" else 2 * B
    print(f"  encoder: {dataset.encoder_name}, {dataset.num_lanes} lane(s); warming up ...", flush=True)
    warm_up(ours_iterator, per_buffer * dataset.num_lanes, B, "ours")
    warm_up(reference_iterator, per_buffer, B, "reference")
    speeds = {"ours": [], "reference": []}
    for repeat in range(args.repeats):
        speeds["ours"].append(window_tokens_per_second(ours_iterator, B * T, args.window))
        speeds["reference"].append(window_tokens_per_second(reference_iterator, B * T, args.window))
        print(
            f"  steady state {repeat + 1}/{args.repeats}: ours {speeds['ours'][-1] / 1e3:,.0f} k tok/s, "
            f"reference {speeds['reference'][-1] / 1e3:,.0f} k tok/s",
            flush=True,
        )
    median = {name: statistics.median(values) for name, values in {**speeds}.items()}
    first = {name: statistics.median(values) for name, values in firsts.items()}
    return {
        "packing": packing,
        "ours_tps": median["ours"],
        "reference_tps": median["reference"],
        "ours_first": first["ours"],
        "reference_first": first["reference"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packing", choices=["stream", "best_fit", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8, help="rows per batch (B)")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per row (T)")
    parser.add_argument("--repeats", type=int, default=4, help="alternating measurements of each kind")
    parser.add_argument("--window", type=float, default=1.5, help="seconds per steady-state window")
    parser.add_argument("--lanes", type=int, default=1, help="data lanes of ours in the best-fit steady state")
    parser.add_argument(
        "--equilibrium-rows", type=int, default=3000, help="best-fit rows per buffer before the steady state is timed"
    )
    parser.add_argument("--nanochat-repo", help="a nanochat checkout: use its own loader as the reference")
    add_corpus_arguments(parser)
    args = parser.parse_args(argv)

    corpus = make_corpus(args)
    tokenizer = make_tokenizer(args)
    encoding = tiktoken_encoding_for(tokenizer)
    if encoding is None:
        raise SystemExit("the reference needs tiktoken and a nanochat-style tokenizer (see the log)")
    files = sorted(Path(corpus).glob("*.parquet"))
    train_files = files[:-1]  # nanochat: the last file is validation
    references = {"stream": reference_stream, "best_fit": reference_best_fit}
    source = "re-implementation"
    if args.nanochat_repo:
        references = nanochat_loaders(args.nanochat_repo, train_files, encoding)
        source = f"nanochat checkout {args.nanochat_repo}"
    packings = ["stream", "best_fit"] if args.packing == "both" else [args.packing]
    print(f"corpus {corpus} ({len(files)} shards), {cpu_count()} CPU cores, reference: {source}")
    results = []
    for packing in packings:
        if packing not in references:
            print(f"\n== {packing}: the nanochat checkout has no loader for it; skipped ==")
            continue
        results.append(run_packing(args, packing, corpus, tokenizer, references[packing], train_files, encoding))

    print(
        f"\n{'packing':<9} {'ours tok/s':>11} {'ref tok/s':>11} {'ratio':>6}  {'ours 1st':>8} {'ref 1st':>8} {'ratio':>6}"
    )
    for r in results:
        print(
            f"{r['packing']:<9} {r['ours_tps'] / 1e3:>9,.0f} k {r['reference_tps'] / 1e3:>9,.0f} k "
            f"{r['ours_tps'] / r['reference_tps']:>6.2f}  {r['ours_first']:>7.2f}s {r['reference_first']:>7.2f}s "
            f"{r['reference_first'] / r['ours_first']:>6.2f}"
        )
    print("(tok/s ratio = ours / reference, higher is better; first-batch ratio = reference / ours, higher is better)")


if __name__ == "__main__":
    main()
