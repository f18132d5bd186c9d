"""Saving a tokenizer folder: the Hugging Face files plus nanochat's `token_bytes.pt`, atomically."""

import logging
from pathlib import Path

from nanochat_hf.atomic import atomic_folder
from nanochat_hf.tokenizer.token_bytes import save_token_bytes


logger = logging.getLogger(__name__)


def save_tokenizer_folder(tokenizer, destination, token_bytes=None) -> Path:
    """Write `tokenizer` (and `token_bytes.pt`) to a new folder, atomically.

    Everything is written into a temporary sibling folder that is renamed to `destination` only once
    complete, so an interrupted run never leaves a half-written tokenizer. An existing `destination` is
    refused rather than overwritten.
    """
    destination = Path(destination)
    with atomic_folder(destination) as staging:
        tokenizer.save_pretrained(staging)
        if token_bytes is not None:
            save_token_bytes(token_bytes, staging)
    logger.info("wrote tokenizer (vocab %d) to %s", len(tokenizer), destination)
    return destination
