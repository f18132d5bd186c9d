"""`NanoChatToolPipeline`: `pipeline("text-generation")` with nanochat's calculator tool loop.

transformers' text-generation pipeline calls `model.generate()` once. A chat model that calls the
calculator writes `<|python_start|>23*19<|python_end|>` and then expects the tool's answer
(`<|output_start|>437<|output_end|>`) to be fed back before it goes on; plain `generate()` never feeds it,
so the model continues after the call on its own guesses and the answer comes out garbled. This pipeline
answers chat messages with `ChatEngine.generate` (the same tool loop as `nanochat-hf chat`) and keeps the
pipeline's interface and output:

    from transformers import pipeline
    from nanochat_hf.chat.tool_pipeline import NanoChatToolPipeline
    chat = pipeline("text-generation", model="runs/sft/final", pipeline_class=NanoChatToolPipeline)
    chat([{"role": "user", "content": "What is 23*19?"}], max_new_tokens=64, do_sample=False)
    # -> [{"generated_text": [..., {"role": "assistant", "content": ...}]}]

The assistant's `content` is nanochat's: a string for a plain reply; with a tool call, the list of parts
(`text`, `python`, `python_output`), which the chat template renders back exactly for the next turn.
`text` next to `generated_text` is the reply written GSM8K-style, tool calls as <<expression=result>>.
Plain strings (not chat messages) go to the ordinary text-generation pipeline.
"""

from transformers import TextGenerationPipeline

from ..errors import UserInputError
from .engine import ChatEngine
from .generation import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K


# Settings of the tool loop itself (nanochat's defaults for those not given); other keyword arguments go
# to `model.generate()` (e.g. `logits_processor`), which refuses those it does not know.
LOOP_KWARGS = ("max_new_tokens", "do_sample", "temperature", "top_k", "seed")
# Text-generation pipeline options that have no meaning for a chat reply.
REFUSED_KWARGS = ("return_full_text", "return_tensors", "return_text", "prefix", "handle_long_generation")


def _is_conversation(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) for m in value)


class NanoChatToolPipeline(TextGenerationPipeline):
    """Text generation whose chat replies run the calculator tool loop (see the module docstring)."""

    def __call__(self, text_inputs, **kwargs):
        if _is_conversation(text_inputs):
            return self._answer([text_inputs], **kwargs)[0]
        if isinstance(text_inputs, (list, tuple)) and text_inputs and all(map(_is_conversation, text_inputs)):
            return self._answer(list(text_inputs), **kwargs)
        return super().__call__(text_inputs, **kwargs)

    def _answer(self, conversations: list, **kwargs) -> list:
        refused = sorted(set(kwargs) & set(REFUSED_KWARGS))
        if refused:
            raise UserInputError(
                f"NanoChatToolPipeline: {', '.join(refused)} has no meaning for chat messages (the reply is "
                "appended to the conversation)"
            )
        generate_kwargs = {key: value for key, value in kwargs.items() if key not in LOOP_KWARGS}
        temperature = kwargs.get("temperature", DEFAULT_TEMPERATURE)
        if kwargs.get("do_sample", True) is False:
            temperature = 0.0
        settings = {
            "max_new_tokens": kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
            "temperature": temperature,
            "top_k": kwargs.get("top_k", DEFAULT_TOP_K),
        }
        engine = ChatEngine(self.model, self.tokenizer)
        results = []
        for index, conversation in enumerate(conversations):
            seed = kwargs.get("seed")
            reply = engine.generate(
                list(conversation), seed=None if seed is None else seed + index, **settings, **generate_kwargs
            )
            answer = {"role": "assistant", "content": reply.content}
            results.append([{"generated_text": [*conversation, answer], "text": reply.text}])
        return results
