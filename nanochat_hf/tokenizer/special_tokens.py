"""nanochat's tokenizer constants: the pre-tokenization split pattern and the 9 special tokens.

Both are fixed by nanochat (`nanochat/tokenizer.py`) and identical in both generations.
The special tokens sit at the END of the vocabulary, in this order: with vocabulary size V, `<|bos|>` is
id V-9 and `<|output_end|>` is id V-1 (65527..65535 for the G1 vocabulary of 65,536).
"""

# GPT-4's cl100k pattern with `\p{N}{1,2}` instead of `\p{N}{1,3}`. It uses possessive quantifiers
# (`?+`, `++`) and Unicode classes: fine for tokenizers' Oniguruma, tiktoken's fancy-regex and `regex`.
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

BOS = "<|bos|>"  # document delimiter: prepended to every document, never appended
USER_START = "<|user_start|>"
USER_END = "<|user_end|>"
ASSISTANT_START = "<|assistant_start|>"
ASSISTANT_END = "<|assistant_end|>"  # ends an assistant turn: the chat model's stop token
PYTHON_START = "<|python_start|>"  # tool call (trained)
PYTHON_END = "<|python_end|>"
OUTPUT_START = "<|output_start|>"  # tool output (forced at inference, never trained)
OUTPUT_END = "<|output_end|>"

# In id order: SPECIAL_TOKENS[i] has id V - len(SPECIAL_TOKENS) + i.
SPECIAL_TOKENS = (
    BOS,
    USER_START,
    USER_END,
    ASSISTANT_START,
    ASSISTANT_END,
    PYTHON_START,
    PYTHON_END,
    OUTPUT_START,
    OUTPUT_END,
)

NUM_BYTE_TOKENS = 256  # a byte-level BPE always contains every single byte
MIN_VOCAB_SIZE = NUM_BYTE_TOKENS + len(SPECIAL_TOKENS)

# The roles of HF chat-template tokens for nanochat's format. There is no EOS in nanochat's pretraining
# data; for chat the end of an assistant turn is the natural stop. Padding is always masked, and using BOS
# (as some nanochat scripts do) keeps it distinct from EOS, so collators that mask `pad_token_id` in labels
# never hide the stop token from the loss.
CHAT_EOS_TOKEN = ASSISTANT_END
PAD_TOKEN = BOS
