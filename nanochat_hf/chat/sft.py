"""Chat fine-tuning (nanochat's midtraining and SFT) with trl's `SFTTrainer`: `run_sft(args, training_args, model_args)`.

`recipes/midtrain.py` and `recipes/sft.py` only parse a YAML into the three dataclasses and call `run_sft`.

How the loss mask is made, and why not with `assistant_only_loss`. Our chat template marks nanochat's
trained tokens with `{% generation %}` blocks, so trl's `assistant_only_loss=True` would give the right
mask for ordinary text. But the template path renders the conversation to one string and tokenizes it
whole, which (1) turns any special-token string inside message text (`<|assistant_start|>` typed by a
user, or scraped into SmolTalk) into a real control token, and transformers' `sanitize_control_tokens`
cannot be combined with `return_assistant_tokens_mask`; and (2) merges two adjacent text parts into one
piece. nanochat encodes every piece of text separately as ordinary text. So every conversation is
rendered here with `render_conversation` (nanochat's algorithm, §9.1) to `input_ids` and `labels`
(-100 exactly where nanochat's mask is 0), and handed to `SFTTrainer` as a pre-tokenized dataset: trl
then only packs (best-fit decreasing into padding-free rows with `position_ids` restarting at every
conversation, so conversations do not attend to each other) or pads, and truncates.

The loss is the model's own: its float32 soft-capped logits and `ForCausalLMLoss` (a token-weighted mean
over the accumulated batch), or its chunked variant when `loss_chunk_size` is set. trl 1.16 would
otherwise compute its own fused LM-head loss, which knows the soft-cap only through the config alias
`final_logit_softcapping` and knows nothing of the model's chunked loss.

Optimizer: nanochat's Muon + AdamW with the stage's LR multiplier and schedule for full fine-tunes
(`optimizer: nanochat`), or the Trainer's own (`optimizer: trainer`: `optim: adamw_torch`,
`paged_adamw_8bit`, ...), which LoRA/QLoRA use (their adapter matrices are not nanochat's parameters).
"""

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, Trainer, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTTrainer

from ..errors import UserInputError
from ..optim import adamw_param_groups_for_fallback, build_optimizer, get_nanochat_schedule
from .arguments import NANOCHAT_LORA_TARGET_MODULES, ChatTrainingArguments
from .datasets import load_mixture, read_words_file
from .engine import configure_chat_generation
from .tokenizer_check import check_chat_tokenizer


logger = logging.getLogger(__name__)

FINAL_DIRNAME = "final"


# ---------------------------------------------------------------------------------------------------------
# The trainer


class NanoChatSFTTrainer(SFTTrainer):
    """`SFTTrainer` with nanochat's optimizer/schedule (when given) and the model's own soft-capped loss."""

    def __init__(self, *args, optimizer_settings: dict | None = None, schedule_settings: dict | None = None, **kwargs):
        self.optimizer_settings = optimizer_settings
        self.schedule_settings = schedule_settings or {}
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer_settings is None:
            return super().create_optimizer(model)
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            logger.warning("FSDP/DeepSpeed shard parameters, so Muon cannot run: AdamW for every parameter")
            lrs = {k: v for k, v in self.optimizer_settings.items() if k.endswith("_lr")}
            self.optimizer = torch.optim.AdamW(adamw_param_groups_for_fallback(model, **lrs))
        else:
            self.optimizer = build_optimizer(model, **self.optimizer_settings)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.optimizer_settings is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            self.lr_scheduler = get_nanochat_schedule(optimizer, num_training_steps, **self.schedule_settings)
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The model's own loss (see the module docstring), not trl's fused head.
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


# ---------------------------------------------------------------------------------------------------------
# Parts


def parse_chat_arguments(argv: list[str], default_config: str | None = None):
    """(ChatTrainingArguments, SFTConfig, ModelConfig) from `--config file.yaml` plus `--key value` overrides."""
    from trl import ModelConfig, SFTConfig, TrlParser

    argv = list(argv)
    if default_config is not None and "--config" not in argv:
        argv = ["--config", default_config, *argv]
    parser = TrlParser((ChatTrainingArguments, SFTConfig, ModelConfig))
    return parser.parse_args_and_config(argv)


def load_chat_tokenizer(location: str):
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise UserInputError(f"tokenizer {location}: cannot load it ({err})") from None
    check_chat_tokenizer(tokenizer, where=f"tokenizer {location}")
    return tokenizer


def load_base_config(model_name_or_path: str):
    """The base model's config, refusing folders in other formats with the command that converts them."""
    from ..configuration_nanochat_hf import NanoChatConfig
    from ..conversion.formats import HF_MODEL_TYPE, detect_format

    if os.path.isdir(model_name_or_path):
        found = detect_format(model_name_or_path)
        if found != "hf":
            raise UserInputError(
                f"--model_name_or_path {model_name_or_path}: a {found} checkpoint; convert it first with "
                f"`nanochat-hf convert {model_name_or_path} NEW_FOLDER`"
            )
    try:
        config = NanoChatConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as err:
        raise UserInputError(f"--model_name_or_path {model_name_or_path}: cannot load its config ({err})") from None
    if config.model_type != HF_MODEL_TYPE:
        raise UserInputError(
            f"--model_name_or_path {model_name_or_path}: model_type {config.model_type!r}, expected {HF_MODEL_TYPE!r}"
        )
    return config


def load_model(model_args, training_args, tokenizer):
    from trl import get_quantization_config

    from ..modeling_nanochat_hf import NanoChatForCausalLM

    kwargs = {"attn_implementation": model_args.attn_implementation or "sdpa", "revision": model_args.model_revision}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        # bitsandbytes quantizes while loading (never a model already in memory); each process its own device.
        from accelerate import PartialState

        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = (
            {"": PartialState().local_process_index}
            if torch.cuda.is_available() and not training_args.use_cpu
            else "cpu"
        )
    model = NanoChatForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    configure_chat_generation(model, tokenizer)
    if training_args.gradient_checkpointing:
        model.config.use_cache = False
    return model


def peft_config_for(model_args):
    from trl import get_peft_config

    if not model_args.use_peft:
        return None
    if model_args.lora_target_modules is None:
        # peft has no default for an unknown model type; every Linear of the blocks (c_proj matches both the
        # attention and the MLP output projections), not lm_head.
        model_args.lora_target_modules = list(NANOCHAT_LORA_TARGET_MODULES)
    return get_peft_config(model_args)


def check_settings(args: ChatTrainingArguments, training_args, model_args) -> str:
    """Refuse contradictory settings before anything is loaded; returns the optimizer to use."""
    if not model_args.model_name_or_path:
        raise UserInputError("--model_name_or_path is required (a nanochat-hf model folder or Hub id)")
    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    if quantized and not model_args.use_peft:
        raise UserInputError(
            "--load_in_4bit/--load_in_8bit: quantized weights are frozen and cannot be fine-tuned; add "
            "--use_peft true (QLoRA trains LoRA adapters on top of the quantized base)"
        )
    optimizer = args.optimizer
    if optimizer == "auto":
        optimizer = "trainer" if model_args.use_peft else "nanochat"
    if optimizer == "nanochat" and model_args.use_peft:
        raise UserInputError(
            "--optimizer nanochat is Muon + AdamW over nanochat's own parameters (a full fine-tune); with "
            "--use_peft use --optimizer trainer and set --optim (adamw_torch, paged_adamw_8bit, ...)"
        )
    if training_args.assistant_only_loss and args.train_on_all_tokens:
        raise UserInputError("--assistant_only_loss true contradicts --train_on_all_tokens true (or --stage mid)")
    return optimizer


def resolve_max_length(training_args, config) -> int:
    max_length = training_args.max_length or config.sequence_len
    if max_length > config.sequence_len:
        raise UserInputError(f"--max_length {max_length} is beyond the model's sequence_len {config.sequence_len}")
    return max_length


def describe(args, training_args, model_args, optimizer: str, config, max_length: int, num_rows: int) -> dict:
    settings = {
        "stage": args.stage,
        "base_model": model_args.model_name_or_path,
        "model": {"depth": config.n_layer, "width": config.n_embd, "vocab_size": config.vocab_size},
        "data": {
            "dataset_mixture": list(args.dataset_mixture),
            "conversations": num_rows,
            "max_length": max_length,
            "trained_tokens": "all" if args.train_on_all_tokens else "assistant (nanochat's mask)",
            "packing": f"{training_args.packing_strategy}" if training_args.packing else "no",
        },
        "method": "qlora" if model_args.load_in_4bit else "lora" if model_args.use_peft else "full",
        "optimizer": {"name": optimizer},
    }
    if optimizer == "nanochat":
        settings["optimizer"].update(
            {
                "init_lr_frac": args.init_lr_frac,
                "matrix_lr": args.matrix_lr * args.init_lr_frac,
                "embedding_lr": args.embedding_lr * args.init_lr_frac,
                "unembedding_lr": args.unembedding_lr * args.init_lr_frac,
                "warmdown_ratio": args.warmdown_ratio,
                "momentum_warmup_steps": args.momentum_warmup_steps,
            }
        )
    else:
        settings["optimizer"].update({"optim": str(training_args.optim), "learning_rate": training_args.learning_rate})
    if model_args.use_peft:
        settings["lora"] = {
            "r": model_args.lora_r,
            "alpha": model_args.lora_alpha,
            "targets": targets if isinstance(targets := model_args.lora_target_modules, str) else sorted(targets),
        }
    return settings


CARD_TEMPLATE = """---
library_name: {library}
tags:
- nanochat
- nanochat-hf
- chat
pipeline_tag: text-generation
---

# nanochat d{depth} chat model ({stage})

{what} with nanochat-hf (trl `SFTTrainer`), in nanochat's chat format: stop token `<|assistant_end|>`,
calculator tool calls between `<|python_start|>` and `<|python_end|>`.

```bash
nanochat-hf chat PATH_OR_REPO --prompt "What is 12*34?"
```

```python
from transformers import pipeline
chat = pipeline("text-generation", model="PATH_OR_REPO", trust_remote_code=True)
print(chat([{{"role": "user", "content": "Hi!"}}])[0]["generated_text"][-1]["content"])
```

## Training run

| setting | value |
|---|---|
{rows}
"""


def write_chat_model_card(folder: Path, settings: dict, log_history: list[dict], is_adapter: bool) -> None:
    from ..training.model_card import _flatten, latest_metrics

    what = (
        f"A LoRA adapter for `{settings['base_model']}` ({settings['method']})"
        if is_adapter
        else f"Fine-tuned from `{settings['base_model']}`"
    )
    rows = [*_flatten(settings), *sorted(latest_metrics(log_history).items())]
    card = CARD_TEMPLATE.format(
        library="peft" if is_adapter else "transformers",
        depth=settings["model"]["depth"],
        stage="midtraining" if settings["stage"] == "mid" else "SFT",
        what=what,
        rows="\n".join(f"| {key} | {value} |" for key, value in rows),
    )
    (folder / "README.md").write_text(card, encoding="utf-8")


def save_final(trainer, final_dir: Path, settings: dict, base: str, is_adapter: bool) -> None:
    """Write the final model (or adapter) folder; it appears under its name only when complete."""
    from .adapters import write_base_fingerprint

    staging = final_dir.with_name(f".{final_dir.name}-incomplete")
    main = trainer.is_world_process_zero()
    if main and staging.exists():
        shutil.rmtree(staging)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # every process: FSDP/DeepSpeed gather the weights collectively
    if main:
        if is_adapter:
            write_base_fingerprint(staging, base)
        write_chat_model_card(staging, settings, trainer.state.log_history, is_adapter)
        (staging / "run_settings.json").write_text(json.dumps(settings, indent=2, default=str))
        trainer.state.save_to_json(str(staging / "trainer_state.json"))
        os.rename(staging, final_dir)
    trainer.accelerator.wait_for_everyone()


def resolve_resume(resume_from_checkpoint, output_dir):
    if resume_from_checkpoint in (None, False, "", "false", "False"):
        return None
    if str(resume_from_checkpoint).lower() in ("last", "true"):
        return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if not os.path.isdir(resume_from_checkpoint):
        raise UserInputError(f"--resume_from_checkpoint {resume_from_checkpoint}: no such folder")
    return resume_from_checkpoint


# ---------------------------------------------------------------------------------------------------------
# The recipe


def run_sft(args: ChatTrainingArguments, training_args, model_args=None, extra_callbacks=()) -> Path:
    """Midtrain or SFT a nanochat model; returns the final folder (a full chat model, or a LoRA adapter)."""
    from trl import ModelConfig

    model_args = model_args if model_args is not None else ModelConfig()
    optimizer = check_settings(args, training_args, model_args)
    final_dir = Path(training_args.output_dir) / FINAL_DIRNAME
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    if final_dir.exists():
        raise UserInputError(f"{final_dir}: already exists; choose a new --output_dir or remove it")
    set_seed(training_args.seed)

    # Everything that can be wrong with the inputs fails here, before the model is loaded.
    tokenizer = load_chat_tokenizer(args.tokenizer_name_or_path or model_args.model_name_or_path)
    config = load_base_config(model_args.model_name_or_path)
    if config.vocab_size != len(tokenizer):
        raise UserInputError(
            f"tokenizer has {len(tokenizer)} tokens but the model {model_args.model_name_or_path} has vocab_size "
            f"{config.vocab_size}; use the tokenizer the model was trained with"
        )
    max_length = resolve_max_length(training_args, config)
    words = read_words_file(args.spelling_words_file) if args.spelling_words_file else None
    mixture_kwargs = {
        "max_length": max_length,
        "train_on_all_tokens": args.train_on_all_tokens,
        "seed": args.mixture_seed,
        "synthetic_seed": args.synthetic_seed,
        "words": words,
        "num_proc": training_args.dataset_num_proc,
    }
    with training_args.main_process_first(desc="rendering the chat mixture"):
        train_dataset = load_mixture(args.dataset_mixture, tokenizer, **mixture_kwargs)
        eval_dataset = (
            load_mixture(args.eval_dataset_mixture, tokenizer, **mixture_kwargs) if args.eval_dataset_mixture else None
        )

    # The labels are already nanochat's mask (see the module docstring); trl must not re-render.
    training_args.assistant_only_loss = False
    if training_args.padding_free and not training_args.packing:
        training_args.max_length = None  # rows are truncated to max_length already; trl refuses it otherwise
    peft_config = peft_config_for(model_args)  # fills in nanochat's LoRA target modules when none are given
    settings = describe(args, training_args, model_args, optimizer, config, max_length, len(train_dataset))

    model = load_model(model_args, training_args, tokenizer)
    if args.loss_chunk_size:
        if not hasattr(model, "loss_chunk_size"):
            raise UserInputError("--loss_chunk_size: this version of the model code has no chunked loss")
        model.loss_chunk_size = args.loss_chunk_size
    optimizer_settings = schedule_settings = None
    if optimizer == "nanochat":
        optimizer_settings = {
            "matrix_lr": args.matrix_lr * args.init_lr_frac,
            "embedding_lr": args.embedding_lr * args.init_lr_frac,
            "unembedding_lr": args.unembedding_lr * args.init_lr_frac,
            "momentum_warmup_steps": args.momentum_warmup_steps,
        }
        schedule_settings = {"warmdown_ratio": args.warmdown_ratio}

    trainer = NanoChatSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        optimizer_settings=optimizer_settings,
        schedule_settings=schedule_settings,
    )
    for callback in extra_callbacks:
        trainer.add_callback(callback)
    if trainer.is_world_process_zero():
        logger.info("chat fine-tuning settings:\n%s", json.dumps(settings, indent=2, default=str))
    trainer.train(resume_from_checkpoint=resume)

    save_final(trainer, final_dir, settings, base=model_args.model_name_or_path, is_adapter=peft_config is not None)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message=f"nanochat chat model ({args.stage}), step {trainer.state.global_step}")
    return final_dir


__all__ = [
    "ChatTrainingArguments",
    "NanoChatSFTTrainer",
    "configure_chat_generation",
    "parse_chat_arguments",
    "run_sft",
]
