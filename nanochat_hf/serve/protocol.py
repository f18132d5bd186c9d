"""OpenAI's chat-completions request and response shapes, as this server reads and writes them.

A request is checked here, before anything is queued: a problem becomes one `ApiError` with the HTTP
status, OpenAI's error `type`, the offending field (`param`) and a sentence saying what was expected.

Tool calls. The calculator runs inside the server (it is part of the model's reply, as in nanochat), so
it is not an OpenAI "tool call" for the client to execute. A reply's `content` writes each call the way
GSM8K annotates them, `<<expression=result>>`, and carries the exact parts as an extra field
`parts` (nanochat's assistant content: `text`, `python`, `python_output`); in a stream, every delta says
which part its text belongs to (`part`). A client may send an assistant message's content back either as
text or as those parts (the chat page sends the parts, so the model sees its tool calls as tool tokens).
"""

import json
import time
import uuid

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiError(Exception):
    """An error response: HTTP `status`, OpenAI error `type`, `param` (the field) and `message`."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": None}}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields this server reads; others an OpenAI client may send (`user`, `metadata`, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_k: int | None = Field(default=None, ge=0)  # not in OpenAI's API; vLLM and others accept it too
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    tools: list | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    # `transformers chat` sends its settings as a GenerationConfig in JSON; read by `apply_generation_config`.
    generation_config: str | dict | None = None


# Fields that would change the result and that this server cannot honour: refused rather than ignored.
def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    if request.n not in (None, 1):
        raise ApiError(400, f"n={request.n}: this server returns one choice per request (n=1)", param="n")
    if request.top_p not in (None, 1, 1.0):
        raise ApiError(400, f"top_p={request.top_p}: nucleus sampling is not supported; use top_k", param="top_p")
    if request.stop:
        raise ApiError(400, "stop sequences are not supported; the model ends its turn itself", param="stop")
    if request.tools:
        raise ApiError(
            400,
            "client-side tools are not supported; the calculator is built in and runs on the server",
            param="tools",
        )
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(request, name) not in (None, 0, 0.0):
            raise ApiError(400, f"{name} is not supported (only 0)", param=name)


def _apply_generation_config(request: ChatCompletionRequest) -> None:
    """Fill max_tokens / temperature / top_k from a `generation_config` (as `transformers chat` sends it) where
    the request's own fields do not say; `do_sample=false` means greedy."""
    config = request.generation_config
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as err:
            raise ApiError(400, f"generation_config is not valid JSON ({err})", param="generation_config") from None
    if not isinstance(config, dict):
        raise ApiError(400, "generation_config must be a JSON object", param="generation_config")
    updates = {}
    if request.max_tokens is None and request.max_completion_tokens is None and config.get("max_new_tokens"):
        updates["max_tokens"] = config["max_new_tokens"]
    if request.temperature is None:
        if config.get("do_sample") is False:
            updates["temperature"] = 0.0
        elif config.get("temperature") is not None:
            updates["temperature"] = config["temperature"]
    if request.top_k is None and config.get("top_k") is not None:
        updates["top_k"] = config["top_k"]
    try:
        ChatCompletionRequest.model_validate({**request.model_dump(), **updates})  # the same range checks
    except ValidationError as err:
        first = err.errors()[0]
        raise ApiError(
            400, f"generation_config: {first['loc'][0]}: {first['msg']}", param="generation_config"
        ) from None
    for key, value in updates.items():
        setattr(request, key, value)


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The request in `body`, or an `ApiError` (400) saying what is wrong with it."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}", param=where) from None
    _refuse_unsupported(request)
    if request.generation_config is not None:
        _apply_generation_config(request)
    return request


def to_conversation(messages: list[ChatMessage]) -> list[dict]:
    """OpenAI messages as nanochat's conversation (`developer` is OpenAI's newer name for `system`)."""
    conversation = []
    for index, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        if role not in ("system", "user", "assistant"):
            raise ApiError(
                400, f"messages.{index}.role: {message.role!r}; expected system, user or assistant", param="messages"
            )
        conversation.append({"role": role, "content": message.content})
    return conversation


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(completion_id: str, model: str, reply, prompt_tokens: int) -> dict:
    """A `chat.completion` object for a finished `AssistantReply`."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text, "parts": [dict(p) for p in reply.parts]},
                "finish_reason": "stop" if reply.finished else "length",
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens(reply)),
    }


def completion_tokens(reply) -> int:
    return len(reply.token_ids) + int(reply.finished)  # the stop token was generated too


def chunk_body(completion_id: str, model: str, delta: dict, finish_reason: str | None = None) -> dict:
    """A `chat.completion.chunk` object (one streamed piece)."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def event_delta(event) -> dict:
    """The streamed delta for one `ChatEvent`: readable text in `content`, the part it belongs to in `part`."""
    if event.kind == "python" and event.text == "":
        return {"content": "<<", "part": "python_start"}
    if event.kind == "python_output":
        return {"content": f"={event.text}>>", "part": "python_output", "text": event.text}
    return {"content": event.text, "part": event.kind}
