"""Chat fine-tuning (nanochat's midtraining and SFT) with trl's `SFTTrainer`: `run_sft(args, training_args, model_args)`.

`recipes/midtrain.py` and `recipes/sft.py` only parse a YAML into the three dataclasses and call `run_sft`.

How the loss mask is made, and why not with `assistant_only_loss`. Our chat template marks nanochat's
trained tokens with `{% generation %}` blocks, so trl's `assistant_only_loss=True` would give the right
mask for ordinary text. But the template path renders the conversation to one string and tokenizes it
whole, which (1) with transformers' stock tokenizer class turns any special-token string inside message
text (`<|assistant_start|>` typed by a user, or scraped into SmolTalk) into a real control token (our
`NanoChatHFTokenizer` prevents that by default, but a folder loaded without it gets the stock class); and
(2) merges two adjacent text parts into one piece. nanochat encodes every piece of text separately as ordinary text. So every conversation is
rendered here with `render_conversation` (nanochat's own algorithm) to `input_ids` and `labels`
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
A generation-2 base model gets nanochat 2026's single stage instead (`sft_gen2.py`): its mixture, the
settings inherited from pretraining, the generation-2 MuonAdamW and its SFT schedule, the warm start from
the pretraining optimizer. The optimizer plumbing, model cards, atomic checkpoints and the final folder
are the shared stage's (`stage.py`), as for pretraining.
"""

import json
import logging
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import Trainer, set_seed
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config, get_quantization_config

from ..chat.adapters import write_base_fingerprint
from ..chat.datasets import load_mixture, read_words_file
from ..chat.generation import configure_chat_generation
from ..chat.tokenizer_check import check_chat_tokenizer
from ..cpu_threads import set_training_cpu_threads
from ..defaults import LORA_TARGET_MODULES
from ..errors import UserInputError
from ..loading import check_vocabulary, open_config, open_model, open_tokenizer
from .checkpoints import prepare_output_dir, resolve_resume_checkpoint
from .model_card import chat_model_card
from .reporting import check_reporters
from .sft_arguments import ChatTrainingArguments
from .sft_gen2 import (
    check_generation_fields,
    describe_gen2_sft,
    gen2_sft_settings,
    resolve_base_optimizer,
    settle_gen2_arguments,
    settle_gen2_batch,
    warm_start,
)
from .stage import NanoChatTrainerMixin


logger = logging.getLogger(__name__)

FINAL_DIRNAME = "final"
SFT_DEFAULT_MAX_LENGTH = SFTConfig.__dataclass_fields__["max_length"].default


# ---------------------------------------------------------------------------------------------------------
# The trainer


class NanoChatSFTTrainer(NanoChatTrainerMixin, SFTTrainer):
    """`SFTTrainer` with nanochat's optimizer/schedule (when given) and the model's own soft-capped loss.

    `base_optimizer`: a pretraining `optimizer.pt` whose moments warm-start the generation-2 optimizer.
    """

    def __init__(self, *args, base_optimizer=None, **kwargs):
        self.base_optimizer = base_optimizer
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        settings = self.gen2_settings
        if settings is None or self.optimizer is not None:
            return super().create_optimizer(model)
        if settings.num_iterations <= 0:
            # One pass over the mixture: the Trainer knows its updates once training starts.
            settings.num_iterations = self.state.max_steps
        optimizer = super().create_optimizer(model)
        if self.base_optimizer is not None:
            warm_start(optimizer, self.base_optimizer)
        return optimizer

    @property
    def is_adapter(self) -> bool:
        return getattr(self.model, "peft_config", None) is not None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The model's own loss (see the module docstring), not trl's fused head.
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    def model_card_words(self) -> dict:
        return chat_model_card(self.run_settings, self.is_adapter)

    def write_final_files(self, folder: Path) -> None:
        if self.is_adapter:
            write_base_fingerprint(folder, self.run_settings["base_model"])


# ---------------------------------------------------------------------------------------------------------
# Parts


def load_chat_tokenizer(location: str, what: str = "--tokenizer_name_or_path"):
    tokenizer = open_tokenizer(location, what)
    check_chat_tokenizer(tokenizer, where=f"tokenizer {location}")
    return tokenizer


def load_model(model_args, training_args, tokenizer):
    kwargs = {"attn_implementation": model_args.attn_implementation or "sdpa", "revision": model_args.model_revision}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        # bitsandbytes quantizes while loading (never a model already in memory); each process its own device.
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = (
            {"": PartialState().local_process_index}
            if torch.cuda.is_available() and not training_args.use_cpu
            else "cpu"
        )
    model = open_model(model_args.model_name_or_path, **kwargs)
    configure_chat_generation(model, tokenizer)
    if training_args.gradient_checkpointing:
        model.config.use_cache = False
    return model


def peft_config_for(model_args):
    if not model_args.use_peft:
        return None
    if model_args.lora_target_modules is None:
        # peft has no default for an unknown model type; every Linear of the blocks (c_proj matches both the
        # attention and the MLP output projections), not lm_head.
        model_args.lora_target_modules = list(LORA_TARGET_MODULES)
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
    if getattr(config, "generation", 1) == 2 and max_length == SFT_DEFAULT_MAX_LENGTH:
        max_length = config.sequence_len  # nanochat 2026 inherits the pretraining row length
    if max_length > config.sequence_len:
        raise UserInputError(f"--max_length {max_length} is beyond the model's sequence_len {config.sequence_len}")
    return max_length


def describe_finetune_optimizer(optimizer: str, args, training_args, **extra) -> dict:
    """The optimizer part of a fine-tuning stage's settings (SFT, RL): nanochat's LRs as run, or the Trainer's."""
    if optimizer != "nanochat":
        optim = getattr(training_args.optim, "value", training_args.optim)  # "adamw_torch", not OptimizerNames.X
        return {"name": optimizer, "optim": str(optim), "learning_rate": training_args.learning_rate}
    return {
        "name": optimizer,
        "init_lr_frac": args.init_lr_frac,
        "matrix_lr": args.matrix_lr * args.init_lr_frac,
        "embedding_lr": args.embedding_lr * args.init_lr_frac,
        "unembedding_lr": args.unembedding_lr * args.init_lr_frac,
        "warmdown_ratio": args.warmdown_ratio,
        **extra,
    }


def describe(
    args, training_args, model_args, optimizer: str, config, max_length: int, num_rows: int, gen2=None
) -> dict:
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
    if gen2 is not None:
        settings["model"]["generation"] = 2
        settings["batch"] = gen2["batch"]
    if optimizer == "nanochat" and gen2 is not None:
        settings["optimizer"] = describe_gen2_sft(args, config.n_embd, gen2["sources"], gen2["warm_start"])
    else:
        settings["optimizer"] = describe_finetune_optimizer(
            optimizer, args, training_args, momentum_warmup_steps=args.momentum_warmup_steps
        )
    if model_args.use_peft:
        settings["lora"] = {
            "r": model_args.lora_r,
            "alpha": model_args.lora_alpha,
            "targets": targets if isinstance(targets := model_args.lora_target_modules, str) else sorted(targets),
        }
    return settings


def written_message(final_dir) -> str:
    """What a finished run wrote: a full chat model, or a LoRA adapter (and what to do with it)."""
    final_dir = Path(final_dir)
    if (final_dir / "adapter_config.json").is_file():
        return (
            f"LoRA adapter written to {final_dir} (chat with it: nanochat-hf chat {final_dir}; a full model: "
            f"nanochat-hf merge-lora {final_dir} MERGED_FOLDER)"
        )
    return f"chat model written to {final_dir} (chat with it: nanochat-hf chat {final_dir})"


# ---------------------------------------------------------------------------------------------------------
# The recipe


def settle_training_args(training_args) -> None:
    """Every SFTConfig value the run decides, set here and nowhere else, before the trainer is built."""
    # The labels are already nanochat's mask (see the module docstring); trl must not re-render.
    training_args.assistant_only_loss = False
    if training_args.ddp_find_unused_parameters is None:
        # Every trained parameter (the model's, or LoRA's on every targeted Linear) is used by every forward
        # pass; frozen ones are no concern of DDP's. Searching for unused ones only costs time and warns.
        training_args.ddp_find_unused_parameters = False
    if training_args.padding_free and not training_args.packing:
        training_args.max_length = None  # rows are truncated to max_length already; trl refuses it otherwise


def run_sft(args: ChatTrainingArguments, training_args, model_args=None, extra_callbacks=()) -> Path:
    """Midtrain or SFT a nanochat model; returns the final folder (a full chat model, or a LoRA adapter)."""
    model_args = model_args if model_args is not None else ModelConfig()
    optimizer = check_settings(args, training_args, model_args)
    check_reporters(training_args.report_to)
    final_dir = Path(training_args.output_dir) / FINAL_DIRNAME
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if final_dir.exists():
        raise UserInputError(f"{final_dir}: already exists; choose a new --output_dir or remove it")
    set_seed(training_args.seed)

    # Everything that can be wrong with the inputs fails here, before the model is loaded.
    if args.tokenizer_name_or_path:
        tokenizer = load_chat_tokenizer(args.tokenizer_name_or_path)
    else:
        tokenizer = load_chat_tokenizer(model_args.model_name_or_path, "--model_name_or_path")
    config = open_config(model_args.model_name_or_path)
    check_vocabulary(len(tokenizer), config, model_args.model_name_or_path)
    generation = getattr(config, "generation", 1)
    check_generation_fields(args, generation, model_args.model_name_or_path)
    max_length = resolve_max_length(training_args, config)
    gen2 = None  # generation 2's inherited settings and warm start
    if generation == 2:
        sources = settle_gen2_arguments(args, model_args.model_name_or_path)
        accumulation = settle_gen2_batch(args, training_args, max_length)
        base_optimizer = None
        if optimizer == "nanochat" and resume is None:  # a resumed run loads its own optimizer state
            base_optimizer = resolve_base_optimizer(args.load_optimizer, model_args.model_name_or_path)
        gen2 = {
            "sources": sources,
            "warm_start": base_optimizer,
            "batch": {
                "total_batch_size": args.total_batch_size,
                "device_batch_size": args.device_batch_size,
                "gradient_accumulation_steps": accumulation,
                "processes": training_args.world_size,
                "sources": {k: sources[k] for k in ("total_batch_size", "device_batch_size")},
            },
        }
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

    settle_training_args(training_args)
    peft_config = peft_config_for(model_args)  # fills in nanochat's LoRA target modules when none are given
    settings = describe(args, training_args, model_args, optimizer, config, max_length, len(train_dataset), gen2)

    set_training_cpu_threads(training_args, logger)
    model = load_model(model_args, training_args, tokenizer)
    if args.loss_chunk_size:
        if not hasattr(model, "loss_chunk_size"):
            raise UserInputError("--loss_chunk_size: this version of the model code has no chunked loss")
        model.loss_chunk_size = args.loss_chunk_size
    optimizer_settings = schedule_settings = gen2_settings = None
    if optimizer == "nanochat" and gen2 is not None:
        gen2_settings = gen2_sft_settings(args)
    elif optimizer == "nanochat":
        optimizer_settings = {
            "matrix_lr": args.matrix_lr * args.init_lr_frac,
            "embedding_lr": args.embedding_lr * args.init_lr_frac,
            "unembedding_lr": args.unembedding_lr * args.init_lr_frac,
            "momentum_warmup_steps": args.momentum_warmup_steps,
            "sharded_optimizer": args.sharded_optimizer,
            "adamw_matrix_lr": args.adamw_matrix_lr,
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
        gen2_settings=gen2_settings,
        gen2_total_batch_size=args.total_batch_size if gen2_settings is not None else None,
        base_optimizer=gen2["warm_start"] if gen2 is not None else None,
        run_settings=settings,
    )
    for callback in extra_callbacks:
        trainer.add_callback(callback)
    if trainer.is_world_process_zero():
        logger.info("chat fine-tuning settings:\n%s", json.dumps(settings, indent=2, default=str))
        prepare_output_dir(training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    trainer.train_from(resume)

    trainer.save_final(final_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message=f"nanochat chat model ({args.stage}), step {trainer.state.global_step}")
    return final_dir
