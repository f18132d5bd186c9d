"""The ASGI application: OpenAI-compatible chat completions, the model list, health, and the chat page.

Routes: `POST /v1/chat/completions` (streamed as server-sent events with `"stream": true`),
`GET /v1/models`, `GET /health`, `GET /` (the chat page, one self-contained HTML file served with a
Content-Security-Policy that lets it load nothing from anywhere, its own origin's API aside).

Every request is checked before it is queued: body size (413), JSON and fields (400), model name (404),
prompt length and `max_tokens` against the limits (400); a full server answers 429. Errors use OpenAI's
shape, `{"error": {"message", "type", "param", "code"}}`.
"""

import asyncio
import html
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserInputError
from .protocol import (
    ApiError,
    chunk_body,
    completion_body,
    completion_tokens,
    event_delta,
    new_completion_id,
    parse_request,
    to_conversation,
    usage,
)
from .scheduler import Busy, Job, Scheduler


PAGE_PATH = Path(__file__).with_name("page.html")
# The page is one file: inline script and style, no image, font or script from anywhere else.
PAGE_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DISCONNECT_POLL_SECONDS = 0.5


@dataclass
class ServeLimits:
    max_prompt_tokens: int = 2048  # the rendered conversation, in tokens
    max_tokens: int = 1024  # the most a request may ask for (max_tokens / max_completion_tokens)
    default_max_tokens: int = 256  # when the request does not say (nanochat's chat default)
    max_body_bytes: int = 1 << 20
    max_batch_size: int = 8
    max_concurrent: int = 64  # requests running or waiting; more get 429
    default_temperature: float = 0.6  # nanochat's chat defaults
    default_top_k: int = 50


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {declared} bytes; the limit is {limit} (--max-body-bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes (--max-body-bytes)")
    return bytes(body)


def _sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class _EventStream(StreamingResponse):
    """A streamed reply that cancels its job however the response ends (finished, disconnected, cancelled)."""

    def __init__(self, content, job: Job):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


def create_app(engine, model_name: str, limits: ServeLimits | None = None, generate_kwargs: dict | None = None):
    """The FastAPI application serving `engine` (a `ChatEngine`) under the name `model_name`.

    `generate_kwargs` go to every `model.generate()` call (e.g. `logits_processor`).
    """
    limits = limits or ServeLimits()
    scheduler = Scheduler(
        engine,
        max_batch_size=limits.max_batch_size,
        max_concurrent=limits.max_concurrent,
        generate_kwargs=generate_kwargs,
    )
    created = int(time.time())
    page = PAGE_PATH.read_text(encoding="utf-8").replace("__MODEL_NAME__", html.escape(model_name))
    context = engine.context_length()

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        await asyncio.to_thread(scheduler.stop)

    app = FastAPI(title="nanochat-hf", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler = scheduler

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err: StarletteHTTPException):
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_SECURITY_POLICY})

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **scheduler.stats()}

    @app.post("/load_model")
    async def load_model(http_request: Request):
        # `transformers chat` asks its server to load the model first and waits for a "ready" event; this
        # server has loaded its one model at start.
        return StreamingResponse(
            iter([_sse({"status": "ready", "model": model_name, "cached": True})]), media_type="text/event-stream"
        )

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "nanochat-hf"}],
        }

    def make_job(request) -> Job:
        if request.model not in (None, model_name):
            raise ApiError(
                404,
                f"model {request.model!r} is not served here; this server serves {model_name!r}",
                type_="not_found_error",
                param="model",
            )
        conversation = to_conversation(request.messages)
        try:
            prompt = engine.prompt_ids(conversation)
        except UserInputError as err:
            raise ApiError(400, str(err), param="messages") from None
        prompt_limit = limits.max_prompt_tokens if context is None else min(limits.max_prompt_tokens, context - 1)
        if len(prompt) > prompt_limit:
            raise ApiError(
                400,
                f"the conversation is {len(prompt)} tokens; this server accepts at most {prompt_limit} "
                "(--max-prompt-tokens and the model's context); start a new conversation",
                param="messages",
            )
        asked = request.max_completion_tokens or request.max_tokens
        if asked is not None and asked > limits.max_tokens:
            raise ApiError(
                400,
                f"max_tokens={asked}; this server allows at most {limits.max_tokens} (--max-tokens)",
                param="max_tokens",
            )
        return Job(
            conversation=conversation,
            max_new_tokens=asked or limits.default_max_tokens,
            temperature=limits.default_temperature if request.temperature is None else request.temperature,
            top_k=limits.default_top_k if request.top_k is None else request.top_k,
            prompt_tokens=len(prompt),
            loop=asyncio.get_running_loop(),
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(http_request: Request):
        request = parse_request(await _read_body(http_request, limits.max_body_bytes))
        job = make_job(request)
        try:
            scheduler.submit(job)
        except Busy as err:
            raise ApiError(429, str(err), type_="rate_limit_error") from None
        completion_id = new_completion_id()
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return _EventStream(_stream(http_request, job, completion_id, include_usage), job)
        try:
            kind, payload = await _next_result(http_request, job, events=False)
        finally:
            job.cancel()
        if kind == "gone":  # the client left before the reply was ready: nobody reads this
            return Response(status_code=204)
        if kind == "error":
            raise ApiError(503, payload, type_="server_error")
        return completion_body(completion_id, model_name, payload, job.prompt_tokens)

    async def _next_result(http_request: Request, job: Job, events: bool):
        """The job's next item (every event when `events`, else only its end); ("gone", None) on disconnect."""
        while True:
            try:
                kind, payload = await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_SECONDS)
            except TimeoutError:
                if await http_request.is_disconnected():
                    return "gone", None
                continue
            if events or kind != "event":
                return kind, payload

    async def _stream(http_request: Request, job: Job, completion_id: str, include_usage: bool):
        try:
            yield _sse(chunk_body(completion_id, model_name, {"role": "assistant", "content": ""}))
            while True:
                kind, payload = await _next_result(http_request, job, events=True)
                if kind == "gone":
                    return
                if kind == "event":
                    yield _sse(chunk_body(completion_id, model_name, event_delta(payload)))
                    continue
                if kind == "error":
                    yield _sse(ApiError(503, payload, type_="server_error").body())
                    return
                finish = "stop" if payload.finished else "length"
                yield _sse(chunk_body(completion_id, model_name, {}, finish_reason=finish))
                if include_usage:
                    final = chunk_body(completion_id, model_name, {})
                    final["choices"] = []
                    final["usage"] = usage(job.prompt_tokens, completion_tokens(payload))
                    yield _sse(final)
                yield _sse("[DONE]")
                return
        finally:
            job.cancel()

    return app
