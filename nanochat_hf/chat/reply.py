"""The reply being generated: its streamed events, the finished reply, and the per-row tool state machine.

Shared by the one-conversation loop (`engine.ChatEngine.generate`) and the batched one (`batching`).
"""

from dataclasses import dataclass, field

from ..tokenizer.special_tokens import ASSISTANT_END, BOS, PYTHON_END, PYTHON_START


@dataclass
class ChatEvent:
    """A piece of the reply as it is generated: `kind` is "text", "python" or "python_output".

    A tool call starts with an event ("python", "") so a front end can open it even before any text.
    """

    kind: str
    text: str


@dataclass
class AssistantReply:
    parts: list[dict] = field(default_factory=list)  # nanochat's assistant content parts
    token_ids: list[int] = field(default_factory=list)  # sampled and forced, without the final stop token
    sampled_mask: list[int] = field(default_factory=list)  # 1 = sampled by the model, 0 = forced (tool output)
    finished: bool = False  # True when the model ended its turn; False when max_new_tokens ran out

    @property
    def content(self):
        """The assistant message content: a string for plain text, else the list of parts."""
        if all(part["type"] == "text" for part in self.parts):
            return "".join(part["text"] for part in self.parts)
        return [dict(part) for part in self.parts]

    @property
    def text(self) -> str:
        """Readable text, tool calls written GSM8K-style as <<expression=result>>."""
        pieces = []
        for part in self.parts:
            if part["type"] == "python":
                pieces.append(f"<<{part['text']}")
            elif part["type"] == "python_output":
                pieces.append(f"={part['text']}>>")
            else:
                pieces.append(part["text"])
        return "".join(pieces)


class ReplyBuilder:
    """nanochat's per-row tool state machine over the streamed tokens, building parts and events."""

    def __init__(self, tokenizer, special: dict[str, int], on_event):
        self.tokenizer = tokenizer
        self.special = special
        self.streaming = on_event is not None  # without a listener, each part is decoded once, when it closes
        self.on_event = on_event or (lambda event: None)
        self.end_tokens = (special[ASSISTANT_END], special[BOS])
        self.python_start = special[PYTHON_START]
        self.python_end = special[PYTHON_END]
        self.reply = AssistantReply()
        self.kind = "text"
        self.part_tokens: list[int] = []
        self.emitted = 0

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _flush(self) -> None:
        """Close the current part (if it has content) into `reply.parts`."""
        text = self._decode(self.part_tokens)
        if len(text) > self.emitted:  # characters held back while a UTF-8 sequence was incomplete
            self.on_event(ChatEvent(self.kind, text[self.emitted :]))
        if text or self.kind == "python":
            self.reply.parts.append({"type": self.kind, "text": text})
        self.part_tokens, self.emitted = [], 0

    def sampled(self, token: int) -> None:
        self.reply.token_ids.append(token)
        self.reply.sampled_mask.append(1)
        if token in self.end_tokens:
            return
        if token == self.python_start:
            self._flush()
            self.kind = "python"
            self.on_event(ChatEvent("python", ""))
            return
        if token == self.python_end and self.kind == "python":
            return  # the engine closes the call when generate() stops on it
        self.part_tokens.append(token)
        if not self.streaming:
            return
        text = self._decode(self.part_tokens)
        if not text.endswith("\ufffd") and len(text) > self.emitted:  # hold back a half-decoded character
            self.on_event(ChatEvent(self.kind, text[self.emitted :]))
            self.emitted = len(text)

    def tool_call(self) -> str:
        """Close the tool call; returns its expression."""
        expression = self._decode(self.part_tokens)
        self._flush()
        self.kind = "text"
        return expression

    def tool_output(self, text: str, tokens: list[int]) -> None:
        self.reply.token_ids.extend(tokens)
        self.reply.sampled_mask.extend([0] * len(tokens))
        self.reply.parts.append({"type": "python_output", "text": text})
        self.on_event(ChatEvent("python_output", text))

    def finish(self, finished: bool) -> AssistantReply:
        if self.kind == "python":  # ran out of tokens inside a tool call
            self.tool_call()
        else:
            self._flush()
        if finished:  # nanochat's engine returns the tokens without the terminal stop token
            self.reply.token_ids.pop()
            self.reply.sampled_mask.pop()
        self.reply.finished = finished
        return self.reply
