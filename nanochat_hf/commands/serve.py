"""`nanochat-hf serve MODEL`: an OpenAI-compatible chat server, with a chat page, on the chat engine.

`POST /v1/chat/completions` (streaming or not), `GET /v1/models`, `GET /health`, and the chat page at `/`.
The calculator tool loop runs in the server, as in `nanochat-hf chat`. Listens on 127.0.0.1 unless told.
"""

import sys

from nanochat_hf.errors import UserInputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a chat model: OpenAI-compatible API and a chat page in the browser, calculator tool included",
        description=(
            "Serve a nanochat chat model folder or Hub id (or a LoRA adapter folder on its base) over HTTP: "
            "POST /v1/chat/completions (OpenAI's API, streamed with stream=true), GET /v1/models, GET /health, and "
            "a chat page at /. Concurrent requests are generated together in batches. Needs the serve extra: "
            "pip install 'nanochat-hf[serve]'."
        ),
    )
    parser.add_argument("model", help="model folder or Hub id (this package's format), or a LoRA adapter folder")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--model-name", help="the model id clients send and /v1/models lists (default: MODEL)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--base", help="base model of a LoRA adapter (default: the one it records)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="requests generated together (default 8)")
    parser.add_argument(
        "--max-concurrent", type=int, default=64, help="requests running or waiting; more are refused with 429 (64)"
    )
    parser.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=None,
        help="longest conversation accepted, in tokens (default: the context)",
    )
    parser.add_argument("--max-tokens", type=int, default=1024, help="most tokens a request may ask for (1024)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (1 MiB)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(func=run)


def _positive(args, *names) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserInputError(f"--{name.replace('_', '-')} must be positive, got {value}")


def run(args) -> int:
    _positive(args, "max_batch_size", "max_concurrent", "max_prompt_tokens", "max_tokens", "max_body_bytes")
    if not 0 <= args.port <= 65535:
        raise UserInputError(f"--port must be in 0..65535, got {args.port}")
    try:
        # Imported when the command runs: the serve extra is optional, and the other commands start faster.
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise UserInputError(
            f"serve needs the serve extra ({err.name} is missing): pip install 'nanochat-hf[serve]'"
        ) from None
    # Imported here for the same reasons (torch, transformers, fastapi):
    from nanochat_hf.chat.engine import ChatEngine, load_chat_model  # (lazy: torch)
    from nanochat_hf.serve.app import ServeLimits, create_app  # (lazy: fastapi)
    from nanochat_hf.serve.server import bind, make_server, url_of  # (lazy: uvicorn)

    sock = bind(args.host, args.port)  # first: a busy port is reported before the model loads
    try:
        model, tokenizer = load_chat_model(args.model, base=args.base, device=args.device, dtype=args.dtype)
        engine = ChatEngine(model, tokenizer)
        context = engine.context_length()
        limits = ServeLimits(
            max_prompt_tokens=args.max_prompt_tokens or context or 2048,
            max_tokens=args.max_tokens,
            default_max_tokens=min(256, args.max_tokens),
            max_body_bytes=args.max_body_bytes,
            max_batch_size=args.max_batch_size,
            max_concurrent=args.max_concurrent,
        )
        app = create_app(engine, args.model_name or args.model, limits)
        url = url_of(sock)
        print(f"nanochat-hf serve: {args.model} at {url}  (chat page {url}/, OpenAI API {url}/v1)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"nanochat-hf serve: listening on {args.host}: reachable from other machines, no authentication",
                file=sys.stderr,
                flush=True,
            )
        # On SIGINT / SIGTERM uvicorn stops accepting, lets running replies finish, then raises the signal
        # again: Ctrl-C ends here with status 130, SIGTERM ends the process with that signal (as services do).
        make_server(app, log_level=args.log_level).run(sockets=[sock])
    except KeyboardInterrupt:
        return 130
    finally:
        sock.close()
    return 0
