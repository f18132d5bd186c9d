"""nanochat's tokenizer and chat format as Hugging Face objects.

- `train_tokenizer` / `train_tokenizer_from_source`: train the byte-level BPE with `tokenizers`.
- `convert_tiktoken_tokenizer`: nanochat's `tokenizer.pkl` (+ `token_bytes.pt`) -> HF tokenizer folder.
- `render_conversation`: a conversation -> (input_ids, labels) exactly as nanochat renders it; the same
  format is available as the chat template (`tokenizer.apply_chat_template`).
- `compute_token_bytes` / `load_token_bytes`: per-token byte lengths for bits-per-byte.
"""

from nanochat_hf.tokenizer.bpe import mergeable_ranks_from_tokenizer, tokenizer_from_mergeable_ranks, wrap_tokenizer
from nanochat_hf.tokenizer.chat import (
    IGNORE_INDEX,
    load_chat_template,
    normalize_conversation,
    render_conversation,
    render_conversation_with_mask,
    render_for_completion,
)
from nanochat_hf.tokenizer.folder import save_tokenizer_folder
from nanochat_hf.tokenizer.special_tokens import MIN_VOCAB_SIZE, SPECIAL_TOKENS, SPLIT_PATTERN
from nanochat_hf.tokenizer.tiktoken_convert import (
    convert_tiktoken_tokenizer,
    load_nanochat_tokenizer,
    load_tiktoken_encoding_state,
    tokenizer_from_tiktoken_pickle,
)
from nanochat_hf.tokenizer.token_bytes import (
    TOKEN_BYTES_FILENAME,
    compute_token_bytes,
    load_token_bytes,
    save_token_bytes,
)
from nanochat_hf.tokenizer.training import TokenizerTrainingArguments, train_tokenizer, train_tokenizer_from_source
