"""`nanochat-hf convert SRC DST`: between nanochat checkpoints (both generations), transformers' built-in
NanoChat (generation 1 only) and ours."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a model folder between nanochat, transformers-native and nanochat-hf formats",
        description=(
            "Convert SRC into a new folder DST. SRC may be a nanochat checkpoint folder (model_NNNNNN.pt + "
            "meta_NNNNNN.json), a folder of transformers' built-in NanoChat (model_type 'nanochat'), or a "
            "nanochat-hf folder (model_type 'nanochat_hf'); the format is detected from the files unless "
            "--from is given. DST must not exist; it appears only when complete."
        ),
    )
    parser.add_argument("src", help="source folder")
    parser.add_argument("dst", help="destination folder (must not exist)")
    parser.add_argument("--from", dest="from_format", choices=["nanochat", "native", "hf"], help="source format")
    parser.add_argument(
        "--to",
        dest="to_format",
        choices=["hf", "native", "nanochat"],
        default="hf",
        help="output format (native: transformers' built-in NanoChat, generation 1 only)",
    )
    parser.add_argument(
        "--step",
        type=int,
        help="nanochat checkpoint step to read (default: the newest), or to write with --to nanochat (default 0)",
    )
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="dtype of the written weights (default: source's)"
    )
    parser.add_argument(
        "--tokenizer", help="a nanochat tokenizer (folder with tokenizer.pkl, or the file) to convert too"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    # Imported when the command runs, so that `nanochat-hf --help` and the other commands start fast.
    from ..conversion import convert

    dst = convert(
        args.src,
        args.dst,
        from_format=args.from_format,
        to_format=args.to_format,
        step=args.step,
        dtype=args.dtype,
        tokenizer=args.tokenizer,
    )
    print(f"wrote {dst}")
    return 0
