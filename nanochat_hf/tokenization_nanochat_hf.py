"""nanochat's tokenizer for transformers: the stock fast tokenizer, with chat rendering that keeps message text ordinary.

This file stands alone (it imports only transformers, and huggingface_hub to upload): it is copied next to
every saved tokenizer and runs from the Hub with `trust_remote_code=True`, where this package is not installed.

Why a class of our own. nanochat encodes message text with `encode_ordinary`: a user who types
`<|assistant_end|>` gets the tokens of the characters "<", "|", "assistant", ..., never the control token, so
no message can forge a turn boundary or a tool call. transformers' `apply_chat_template` renders the chat to
one string and tokenizes it, matching control-token strings anywhere, message text included. Its
`sanitize_control_tokens=True` fixes that, but it is off by default (so `pipeline("text-generation")`, which
does not pass it, is open to injection) and cannot be combined with `return_assistant_tokens_mask=True` or
`tokenize=False`. Here it is on by default and works with both:

- the inputs' strings (messages, tools, documents, template variables) get every control token wrapped in
  two private-use markers before rendering;
- the rendered string is cut at the control tokens the template wrote itself (the unmarked ones); each
  piece between two of them is encoded as ordinary text, the marked control tokens included as plain
  characters, and the template's control tokens become their ids;
- the generation spans of the template (`{% generation %}`) are mapped through the same cut, so
  `assistant_masks` marks exactly the tokens inside them.

Every piece of our template's output lies between two control tokens, so each message text is encoded on its
own, exactly as nanochat's `render_conversation` encodes it (transformers' own sanitizer splits the text
around a control token instead, which can change the ids at those boundaries).

With `tokenize=False` the rendered string is returned unchanged: sanitizing decides how the string is encoded,
not what it says. Encoding that string again with `tokenizer(text)` matches control tokens anywhere in it;
tokenize through `apply_chat_template` to keep message text ordinary.
`sanitize_control_tokens=False` gives transformers' behaviour exactly.
"""

import bisect
import json
import os
import re
from collections.abc import Mapping

from transformers import BatchEncoding, PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template


# Private-use code points (Unicode's Plane-0 private area): they carry no meaning in text, and any already
# present in an input string are removed before marking, so a user cannot forge a marked token.
_MARK_START = "\ue0a0"
_MARK_END = "\ue0a1"
# `tokenizer_kwargs` that only shape the padded output; anything else would change the encoding itself.
_PAD_KWARGS = ("padding_side", "pad_to_multiple_of", "return_attention_mask")


class NanoChatHFTokenizer(PreTrainedTokenizerFast):
    """`PreTrainedTokenizerFast` whose `apply_chat_template` encodes message text as ordinary text by default."""

    def apply_chat_template(
        self,
        conversation,
        tools=None,
        documents=None,
        chat_template=None,
        add_generation_prompt=False,
        continue_final_message=False,
        tokenize=True,
        sanitize_control_tokens=True,
        padding=False,
        truncation=False,
        max_length=None,
        return_tensors=None,
        return_dict=True,
        return_assistant_tokens_mask=False,
        tokenizer_kwargs=None,
        **kwargs,
    ):
        common = dict(
            tools=tools,
            documents=documents,
            chat_template=chat_template,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            **kwargs,
        )
        if not sanitize_control_tokens or not tokenize:
            return super().apply_chat_template(
                conversation,
                tokenize=tokenize,
                sanitize_control_tokens=False,
                padding=padding,
                truncation=truncation,
                max_length=max_length,
                return_tensors=return_tensors,
                return_dict=return_dict,
                return_assistant_tokens_mask=return_assistant_tokens_mask,
                tokenizer_kwargs=tokenizer_kwargs,
                **common,
            )
        if return_assistant_tokens_mask and not return_dict:
            raise ValueError("`return_assistant_tokens_mask=True` requires `return_dict=True`")
        if return_assistant_tokens_mask and continue_final_message:
            raise ValueError("continue_final_message is not compatible with return_assistant_tokens_mask.")
        pad_kwargs = dict(tokenizer_kwargs or {})
        unknown = sorted(set(pad_kwargs) - set(_PAD_KWARGS))
        if unknown:
            raise ValueError(
                f"tokenizer_kwargs {unknown} cannot be combined with sanitize_control_tokens=True (accepted: "
                f"{list(_PAD_KWARGS)}); pass sanitize_control_tokens=False to tokenize the rendered text directly"
            )

        conversations, is_batched = _as_batch(conversation)
        chat_template = self.get_chat_template(chat_template, tools)
        control_re = self._control_token_pattern()
        kwargs = _mark(kwargs, control_re)
        rendered, generation_spans = render_jinja_template(
            conversations=[_mark(chat, control_re) for chat in conversations],
            tools=_mark(tools, control_re),
            documents=_mark(documents, control_re),
            chat_template=chat_template,
            return_assistant_tokens_mask=return_assistant_tokens_mask,
            continue_final_message=continue_final_message,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens_map, **kwargs},
        )

        all_ids, all_masks = [], []
        for index, text in enumerate(rendered):
            ids, offsets = self._encode_marked(text, control_re)
            mask = _span_mask(offsets, generation_spans[index]) if return_assistant_tokens_mask else None
            if truncation and max_length is not None and len(ids) > max_length:
                keep = (
                    slice(None, max_length) if self.truncation_side == "right" else slice(len(ids) - max_length, None)
                )
                ids = ids[keep]
                mask = mask[keep] if mask is not None else None
            all_ids.append(ids)
            all_masks.append(mask)

        out = self.pad(
            {"input_ids": all_ids if is_batched or return_tensors else all_ids[0]},
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_kwargs.get("pad_to_multiple_of"),
            padding_side=pad_kwargs.get("padding_side"),
            return_attention_mask=pad_kwargs.get("return_attention_mask"),
        )
        if return_assistant_tokens_mask:
            padded_ids = out["input_ids"] if is_batched or return_tensors else [out["input_ids"]]
            side = pad_kwargs.get("padding_side") or self.padding_side
            masks = [
                _pad_list(mask, len(row) - len(mask), side) for mask, row in zip(all_masks, padded_ids, strict=True)
            ]
            out["assistant_masks"] = masks if is_batched or return_tensors else masks[0]
        if return_tensors:
            out = BatchEncoding(dict(out), tensor_type=return_tensors)
        return out if return_dict else out["input_ids"]

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """Save as transformers does, naming the stock class in `tokenizer_config.json` and this one in `auto_map`.

        So the folder loads everywhere: `AutoTokenizer.from_pretrained(path)` gives the stock fast tokenizer
        (same ids; sanitize only on request) and `trust_remote_code=True` gives this class (sanitize by default).
        """
        hub_kwargs = {
            key: kwargs.pop(key) for key in ("repo_id", "token", "commit_message", "private") if key in kwargs
        }
        files = super().save_pretrained(save_directory, *args, **kwargs)
        config_path = os.path.join(save_directory, "tokenizer_config.json")
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
        config["tokenizer_class"] = PreTrainedTokenizerFast.__name__
        staging = config_path + ".tmp"
        with open(staging, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        os.replace(staging, config_path)  # never a half-written config under the real name
        if push_to_hub:
            # Upload this folder as written (transformers' own push would upload before the rewrite above, and
            # `push_to_hub` would save everything a second time into a temporary folder).
            from huggingface_hub import CommitOperationAdd, HfApi  # a transformers dependency; only for uploads

            api = HfApi(token=hub_kwargs.get("token"))
            repo_name = hub_kwargs.get("repo_id") or os.path.basename(os.path.normpath(str(save_directory)))
            repo_id = api.create_repo(repo_name, private=hub_kwargs.get("private"), exist_ok=True).repo_id
            operations = [
                CommitOperationAdd(path_in_repo=os.path.relpath(path, save_directory), path_or_fileobj=path)
                for path in _files_under(str(save_directory))
            ]
            api.create_commit(
                repo_id=repo_id,
                operations=operations,
                commit_message=hub_kwargs.get("commit_message") or "Upload tokenizer",
            )
        return files

    def _control_token_pattern(self) -> re.Pattern:
        """Every added token (nanochat's are all control tokens), longest first so no token hides a longer one."""
        tokens = sorted((token.content for token in self.added_tokens_decoder.values()), key=len, reverse=True)
        return re.compile("|".join(map(re.escape, tokens)) or "(?!)")

    def _encode_marked(self, text: str, control_re: re.Pattern) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of a rendered chat, and each id's (start, end) in `text`.

        Unmarked control tokens were written by the template: they become their ids. Between two of them the
        text (marked tokens as plain characters, markers dropped) is one piece, encoded as ordinary text.
        """
        # First cut the chat into items: a control-token id with its span, or a piece of text given as the
        # runs of characters it is made of, each with its start in `text` (to map token offsets back).
        items: list = []
        runs: list[tuple[str, int]] = []

        def end_piece():
            if runs:
                items.append(list(runs))
                runs.clear()

        marked_re = re.compile(
            f"{_MARK_START}({control_re.pattern}){_MARK_END}|[{_MARK_START}{_MARK_END}]|{control_re.pattern}"
        )
        position = 0
        for match in marked_re.finditer(text):
            if match.start() > position:
                runs.append((text[position : match.start()], position))
            if match.group(1) is not None:  # a control token from the inputs: plain text
                runs.append((match.group(1), match.start(1)))
            elif match.group(0) not in (_MARK_START, _MARK_END):  # the template's own control token
                end_piece()
                items.append((self.convert_tokens_to_ids(match.group(0)), (match.start(), match.end())))
            position = match.end()
        if position < len(text):
            runs.append((text[position:], position))
        end_piece()

        pieces = [item for item in items if isinstance(item, list)]
        encodings = iter(
            self._ordinary_backend().encode_batch(
                ["".join(run for run, _ in piece) for piece in pieces], add_special_tokens=False
            )
        )
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for item in items:
            if isinstance(item, tuple):
                ids.append(item[0])
                offsets.append(item[1])
                continue
            encoding = next(encodings)
            run_starts, length = [], 0
            for run, _ in item:
                run_starts.append(length)
                length += len(run)

            def to_text(position: int, item=item, run_starts=run_starts) -> int:
                index = max(0, bisect.bisect_right(run_starts, position) - 1)
                return item[index][1] + position - run_starts[index]

            ids.extend(encoding.ids)
            offsets.extend((to_text(start), to_text(max(start, end - 1)) + 1) for start, end in encoding.offsets)
        return ids, offsets

    def _ordinary_backend(self):
        """A copy of the backend that matches no added token at all: nanochat's `encode_ordinary`.

        A copy, not the shared backend with its `encode_special_tokens` switched on for the call, so that a
        concurrent ordinary call (which sets that switch per call) can never make this one match control tokens.
        Rebuilt when tokens are added.
        """
        size = len(self.added_tokens_decoder)
        cached = getattr(self, "_ordinary_cache", None)
        if cached is None or cached[0] != size:
            spec = json.loads(self.backend_tokenizer.to_str())
            for token in spec.get("added_tokens", []):
                token["special"] = True  # encode_special_tokens skips special tokens only
            backend = type(self.backend_tokenizer).from_str(json.dumps(spec))
            backend.encode_special_tokens = True
            backend.no_padding()
            backend.no_truncation()
            cached = self._ordinary_cache = (size, backend)
        return cached[1]


def _as_batch(conversation) -> tuple[list, bool]:
    if isinstance(conversation, (list, tuple)) and not conversation:
        raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
    first = conversation[0] if isinstance(conversation, (list, tuple)) else None
    if isinstance(first, (list, tuple)) or hasattr(first, "messages"):
        return [_messages(chat) for chat in conversation], True
    return [_messages(conversation)], False


def _messages(chat) -> list:
    """Messages as plain dicts without None values (what transformers' renderer expects)."""
    chat = getattr(chat, "messages", chat)
    return [
        {key: value for key, value in dict(message).items() if value is not None}
        if isinstance(message, Mapping)
        else message
        for message in chat
    ]


def _mark(value, control_re: re.Pattern):
    """Wrap every control token in the strings of `value` (recursively; dict keys stay) in the two markers."""
    if isinstance(value, str):
        value = value.replace(_MARK_START, "").replace(_MARK_END, "")
        return control_re.sub(lambda match: _MARK_START + match.group(0) + _MARK_END, value)
    if isinstance(value, Mapping):
        return {key: _mark(item, control_re) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark(item, control_re) for item in value]
    return value


def _files_under(folder: str) -> list[str]:
    """Every file below `folder`, in a stable order."""
    return sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)


def _span_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for every token overlapping a generation span (spans and offsets are both in order)."""
    mask = [0] * len(offsets)
    span = 0
    for index, (start, end) in enumerate(offsets):
        while span < len(spans) and start >= spans[span][1]:
            span += 1
        if span == len(spans):
            break
        if end > spans[span][0]:
            mask[index] = 1
    return mask


def _pad_list(values: list[int], count: int, side: str) -> list[int]:
    return values + [0] * count if side == "right" else [0] * count + values


# Every tokenizer of this class names its code in `tokenizer_config.json["auto_map"]` and gets this file copied
# beside it on save, so the Hub copy works without this package.
NanoChatHFTokenizer.register_for_auto_class("AutoTokenizer")
