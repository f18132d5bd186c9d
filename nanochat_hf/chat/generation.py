"""How a saved chat model generates by default: nanochat's stop tokens and its chat CLI's sampling.

Written into the model's `generation_config` by fine-tuning, merging and the chat loader, so that
`model.generate()` and `pipeline("text-generation")` behave like nanochat's chat without extra arguments.
"""

# nanochat's chat CLI defaults (scripts/chat_cli.py): temperature 0.6, top-k 50, up to 256 new tokens.
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_K = 50
DEFAULT_MAX_NEW_TOKENS = 256
CHAT_GENERATION_DEFAULTS = {
    "do_sample": True,
    "temperature": DEFAULT_TEMPERATURE,
    "top_k": DEFAULT_TOP_K,
    "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
}


def configure_chat_generation(model, tokenizer) -> None:
    """Stop on `<|assistant_end|>` (and `<|bos|>`, as nanochat's engine does) and sample like nanochat's chat CLI."""
    for config in (model.config, model.generation_config):
        config.bos_token_id = tokenizer.bos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.bos_token_id]
    for key, value in CHAT_GENERATION_DEFAULTS.items():
        setattr(model.generation_config, key, value)
