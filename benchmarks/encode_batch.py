"""Batch encoding of pretraining text: our encoders vs tiktoken's `encode_ordinary_batch` on nanochat's vocabulary.

    python benchmarks/encode_batch.py                         # 8,192-token vocabulary, 12 MB of text
    python benchmarks/encode_batch.py --megabytes 33 --vocab-size 65536
    python benchmarks/encode_batch.py --tokenizer ~/.cache/nanochat/tokenizer --data ~/.cache/nanochat/base_data

Encoders, each fed the same documents in batches of `--batch` (nanochat: 128), in alternating rounds:

- reference: `tiktoken.Encoding.encode_ordinary_batch(batch, num_threads=4)`, what nanochat calls;
- ours (`batch_encoder(tokenizer).encode_batch`): for a nanochat tokenizer, tiktoken on a persistent
  thread pool writing numpy buffers (ids checked identical to the tokenizer's before timing);
- ours, flat (`encode_flat`): the same, returning one BOS-prefixed token array per batch, as the data lane
  uses it;
- tokenizers (`TokenizersBatchEncoder`): the tokenizer's own Rust batch path (`encode_batch_fast`).

Prints MB/s (UTF-8 bytes) per encoder and the ratio to the reference (median over `--repeats` rounds).
"""

import argparse
import statistics
import time

from bench_corpus import add_corpus_arguments, cpu_count, make_corpus, make_tokenizer, parquet_texts

from nanochat_hf.data.encoding import TokenizersBatchEncoder, batch_encoder, tiktoken_encoding_for


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=12.0, help="characters of text to encode, in millions")
    parser.add_argument("--batch", type=int, default=128, help="documents per call")
    parser.add_argument("--threads", type=int, default=4, help="tiktoken threads of the reference (nanochat: 4)")
    parser.add_argument("--repeats", type=int, default=5)
    add_corpus_arguments(parser)
    args = parser.parse_args(argv)

    tokenizer = make_tokenizer(args)
    texts = parquet_texts(make_corpus(args), args.megabytes * 1e6)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]
    reference = tiktoken_encoding_for(tokenizer)
    if reference is None:
        raise SystemExit("the reference needs tiktoken and a nanochat-style tokenizer (see the log)")
    ours = batch_encoder(tokenizer)
    tokenizers_path = TokenizersBatchEncoder(tokenizer)
    bos = tokenizer.bos_token_id
    print(
        f"{len(texts):,} documents, {megabytes:.1f} MB, vocab {len(tokenizer)}, {cpu_count()} CPU cores; "
        f"ours = {ours.name} ({getattr(ours, 'num_threads', 'rayon')} threads)",
        flush=True,
    )
    sample = texts[:300]
    expected = reference.encode_ordinary_batch(sample)
    assert ours.encode_batch(sample) == expected and tokenizers_path.encode_batch(sample) == expected

    encoders = {
        "reference (tiktoken encode_ordinary_batch)": lambda b: reference.encode_ordinary_batch(
            b, num_threads=args.threads
        ),
        f"ours ({ours.name}) encode_batch": ours.encode_batch,
        f"ours ({ours.name}) encode_flat": lambda b: ours.encode_flat(b, prepend=bos),
        "tokenizers encode_batch_fast": tokenizers_path.encode_batch,
    }
    times = {name: [] for name in encoders}
    for repeat in range(args.repeats):
        for name, encode in encoders.items():
            start = time.perf_counter()
            for batch in batches:
                encode(batch)
            times[name].append(time.perf_counter() - start)
        line = ", ".join(f"{name.split(' ')[0]} {megabytes / t[-1]:.2f}" for name, t in times.items())
        print(f"  round {repeat + 1}/{args.repeats} (MB/s): {line}", flush=True)

    base = statistics.median(times[next(iter(encoders))])
    print(f"\n{'encoder':<44} {'MB/s':>7} {'ratio':>6}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<44} {megabytes / median:>7.2f} {base / median:>6.2f}")
    print("(ratio = speed / the reference's, in the same process)")


if __name__ == "__main__":
    main()
