"""`nanochat-hf convert-tokenizer SRC DST`: nanochat's tokenizer.pkl -> Hugging Face tokenizer folder."""

from nanochat_hf.defaults import SEQUENCE_LEN


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-tokenizer",
        help="convert nanochat's tokenizer (tokenizer.pkl + token_bytes.pt) to a Hugging Face tokenizer folder",
        description=(
            "Convert nanochat's saved tokenizer to a folder that AutoTokenizer.from_pretrained loads, with the "
            "same token ids as tiktoken, nanochat's chat template and token_bytes.pt. The pickle is read with a "
            "restricted unpickler that only accepts a tiktoken Encoding."
        ),
    )
    parser.add_argument("src", help="nanochat tokenizer folder (with tokenizer.pkl) or the tokenizer.pkl file")
    parser.add_argument("dst", help="output folder (must not exist)")
    parser.add_argument(
        "--token-bytes-rule",
        choices=("g1", "raw"),
        default="g1",
        help="rule for token_bytes.pt when SRC has none: g1 = released d32 (default), raw = 2026 nanochat",
    )
    parser.add_argument(
        "--model-max-length", type=int, default=SEQUENCE_LEN, help="context size recorded in the tokenizer"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    # Imported when the command runs, so that `nanochat-hf --help` and the other commands start fast.
    from nanochat_hf.tokenizer.tiktoken_convert import convert_tiktoken_tokenizer

    destination = convert_tiktoken_tokenizer(
        args.src, args.dst, token_bytes_rule=args.token_bytes_rule, model_max_length=args.model_max_length
    )
    print(f"wrote {destination}")
    return 0
