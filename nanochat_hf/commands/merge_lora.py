"""`nanochat-hf merge-lora ADAPTER DST`: fold a LoRA adapter into its base, giving a full model folder."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge-lora",
        help="merge a LoRA/QLoRA adapter into its base model and write a full model folder",
        description=(
            "Load the adapter's base in full precision (also for QLoRA adapters), check that it is the model the "
            "adapter was trained on, merge the adapter and write DST (weights, code, tokenizer, chat generation "
            "settings). DST appears only once complete."
        ),
    )
    parser.add_argument("adapter", help="adapter folder (adapter_config.json), e.g. runs/sft-lora/final")
    parser.add_argument("dst", help="output folder (must not exist)")
    parser.add_argument("--base", help="base model folder or Hub id (default: the one the adapter records)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    # Imported when the command runs, so that `nanochat-hf --help` and the other commands start fast.
    from nanochat_hf.chat.adapters import merge_lora

    destination = merge_lora(args.adapter, args.dst, base=args.base, dtype=getattr(torch, args.dtype))
    print(f"wrote {destination}")
    return 0
