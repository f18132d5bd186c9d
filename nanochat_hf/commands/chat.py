"""`nanochat-hf chat MODEL`: talk to a nanochat chat model, with the calculator tool, streamed.

One-shot with `--prompt`, else an interactive multi-turn session (`clear` starts over, `quit` or Ctrl-D
ends it; Ctrl-C during a reply stops that reply and keeps the session). Tool calls appear inline as
<<expression=result>>, the way GSM8K annotates them.
"""

import sys

from nanochat_hf.errors import UserInputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="chat with a nanochat model (interactive, or one-shot with --prompt), calculator tool included",
        description=(
            "Chat with a nanochat chat model folder or Hub id (or a LoRA adapter folder on its base). Replies stream "
            "as they are sampled; when the model calls the calculator, the expression is evaluated safely and the "
            "result fed back, as nanochat's engine does."
        ),
    )
    parser.add_argument("model", help="model folder or Hub id (this package's format), or a LoRA adapter folder")
    parser.add_argument("--prompt", help="ask one question, print the answer and exit")
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy (default 0.6, nanochat's)")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="per reply, tool outputs included")
    parser.add_argument("--seed", type=int, default=42, help="sampling seed")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--base", help="base model of a LoRA adapter (default: the one it records)")
    parser.set_defaults(func=run)


class _Printer:
    """Writes streamed reply events; tool calls as <<expression=result>>."""

    def __init__(self, out):
        self.out = out

    def __call__(self, event) -> None:
        if event.kind == "python" and event.text == "":
            self.out.write("<<")
        elif event.kind == "python_output":
            self.out.write(f"={event.text}>>")
        else:
            self.out.write(event.text)
        self.out.flush()


def run(args) -> int:
    # Imported when the command runs, so that `nanochat-hf --help` and the other commands start fast.
    from nanochat_hf.chat.engine import ChatEngine, load_chat_model

    if args.max_new_tokens <= 0:
        raise UserInputError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise UserInputError(f"--temperature must be >= 0, got {args.temperature}")
    model, tokenizer = load_chat_model(args.model, base=args.base, device=args.device, dtype=args.dtype)
    engine = ChatEngine(model, tokenizer)
    printer = _Printer(sys.stdout)
    settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k}

    if args.prompt is not None:
        if not args.prompt.strip():
            raise UserInputError("--prompt is empty")
        engine.generate([{"role": "user", "content": args.prompt}], seed=args.seed, on_event=printer, **settings)
        print()
        return 0

    print(f"Chatting with {args.model}. Type 'clear' to start over, 'quit' or Ctrl-D to leave; Ctrl-C stops a reply.")
    messages: list[dict] = []
    first = True
    while True:
        try:
            text = input("\nUser: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if text.lower() in ("quit", "exit"):
            return 0
        if text.lower() == "clear":
            messages = []
            print("(new conversation)")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("Assistant: ", end="", flush=True)
        try:
            reply = engine.generate(messages, seed=args.seed if first else None, on_event=printer, **settings)
        except UserInputError as err:  # e.g. the conversation outgrew the context
            messages.pop()
            print(f"\n({err})")
            continue
        except KeyboardInterrupt:  # Ctrl-C while the reply streams: drop this turn, keep the conversation
            messages.pop()
            print("\n(reply stopped; that message is not part of the conversation)")
            continue
        first = False
        print()
        # An empty reply cannot be rendered back as an assistant turn; keep the alternation with a blank space.
        messages.append({"role": "assistant", "content": reply.content or " "})
