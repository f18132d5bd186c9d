"""Tiny chat tokenizer and models shared by the chat tests (real components, built once per session)."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import TrainerCallback


@functools.lru_cache(maxsize=1)
def chat_tokenizer_dir() -> Path:
    """A 512-token nanochat tokenizer trained on Python's docs and the synthetic chats, saved to a folder."""
    from nanochat_hf.chat.synthetic import embedded_conversations
    from nanochat_hf.embedded_corpus import iter_embedded_documents
    from nanochat_hf.tokenizer import train_tokenizer
    from nanochat_hf.tokenizer.folder import save_tokenizer_folder

    chats = []
    for conversation in embedded_conversations(200):
        for message in conversation["messages"]:
            content = message["content"]
            chats.append(content if isinstance(content, str) else "".join(part["text"] for part in content))
    texts = [*chats, *iter_embedded_documents(max_docs=200)]
    tokenizer = train_tokenizer(texts, vocab_size=512, max_chars=300_000, model_max_length=256, show_progress=False)
    root = tempfile.mkdtemp(prefix="nanochat-chat-tok-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    folder = Path(root) / "tokenizer"
    save_tokenizer_folder(tokenizer, folder)
    return folder


def chat_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(chat_tokenizer_dir())


def tiny_config(vocab_size: int, **overrides):
    from nanochat_hf import NanoChatHFConfig

    settings = dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, vocab_size=vocab_size, sequence_len=256)
    settings.update(overrides)
    return NanoChatHFConfig(**settings)


def save_tiny_model(
    folder, seed: int = 0, random_weights: bool = False, chat: bool = True, **config_overrides
) -> Path:
    """A tiny nanochat model + the chat tokenizer saved to `folder` (nanochat's init unless `random_weights`)."""
    from helpers import randomize_

    from nanochat_hf import NanoChatHFForCausalLM
    from nanochat_hf.chat.generation import configure_chat_generation

    tokenizer = chat_tokenizer()
    torch.manual_seed(seed)
    model = NanoChatHFForCausalLM(tiny_config(len(tokenizer), **config_overrides))
    if random_weights:
        randomize_(model, seed=seed, scale=0.15)
    if chat:
        configure_chat_generation(model, tokenizer)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def chat_args(output_dir, model, **overrides):
    """(ChatTrainingArguments, SFTConfig, ModelConfig) of a tiny CPU fine-tuning run; `overrides` as on the command line."""
    from helpers import to_argv

    from nanochat_hf.training.sft_arguments import parse_chat_arguments

    settings = {
        "model_name_or_path": str(model),
        "dataset_mixture": "embedded:160",
        "max_length": 128,
        "packing": True,
        "per_device_train_batch_size": 4,
        "max_steps": 4,
        "output_dir": str(output_dir),
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(overrides)
    return parse_chat_arguments(to_argv(settings))


class Capture(TrainerCallback):
    """Keeps what the trainer hands to callbacks at the first step and every logged loss."""

    def __init__(self):
        self.losses, self.first_step = [], None

    def on_step_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if self.first_step is None:
            self.first_step = {
                "model": model,
                "optimizer": optimizer,
                "lrs": [group["lr"] for group in optimizer.param_groups],
                "scheduler": lr_scheduler,
            }

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])
