"""Base-model pretraining as nanochat generation 1 does it, through the transformers `Trainer`.

`run_pretraining(args, training_args)` is the whole recipe; `recipes/pretrain.py` only parses the YAML
and command line into the two dataclasses. Order of work, chosen so that every mistake in the settings
surfaces before anything slow starts: resolve the model shape, open the tokenizer and data source, plan
batch and horizon, then (unless `dry_run`) build the model and train.
"""

import json
import logging
import os
from pathlib import Path

import torch
from transformers import AutoTokenizer, TrainingArguments, set_seed

from ..callbacks import EnergyCallback, SampleCallback, ThroughputCallback, ValBpbCallback, add_metric_callbacks
from ..callbacks.core_eval import CoreEvalCallback
from ..configuration_nanochat_hf import NanoChatConfig
from ..data.pretrain import build_pretrain_datasets, load_data_state
from ..errors import UserInputError
from ..flops import ModelShape, flops_per_token
from ..modeling_nanochat_hf import NanoChatForCausalLM
from ..tokenizer import (
    TokenizerTrainingArguments,
    compute_token_bytes,
    load_token_bytes,
    train_tokenizer_from_source,
)
from ..tokenizer.token_bytes import TOKEN_BYTES_FILENAME
from ..training_plan import plan_training
from .arguments import PretrainArguments
from .checkpoints import resolve_resume_checkpoint, set_aside_incomplete
from .memory import check_fp8_support, enable_fp8, knob_overrides, resolve_memory_setup
from .trainer import NanoChatPretrainer


logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Parts


def resolve_model_config(args: PretrainArguments, vocab_size: int) -> NanoChatConfig:
    """The shape to train: a preset/depth with the tokenizer's vocabulary, or an existing model's config."""
    if args.model_name_or_path is not None:
        config = NanoChatConfig.from_pretrained(args.model_name_or_path)
        if config.vocab_size != vocab_size:
            raise UserInputError(
                f"tokenizer has {vocab_size} tokens but the model {args.model_name_or_path} has vocab_size "
                f"{config.vocab_size}; use the tokenizer the model was trained with"
            )
        if args.sequence_len > config.sequence_len:
            raise UserInputError(
                f"--sequence_len {args.sequence_len} is beyond the model's sequence_len {config.sequence_len}"
            )
        return config
    try:
        if args.preset is not None:
            return NanoChatConfig.from_preset(args.preset, vocab_size=vocab_size, sequence_len=args.sequence_len)
        return NanoChatConfig.from_depth(args.depth, vocab_size=vocab_size, sequence_len=args.sequence_len)
    except ValueError as err:
        raise UserInputError(f"--depth/--preset: {err}") from None


def load_or_train_tokenizer(args: PretrainArguments, output_dir: str, is_main_process: bool):
    """(tokenizer, token_bytes). Trains one on the dataset into `output_dir/tokenizer` when none is given."""
    location = args.tokenizer_name_or_path
    if location is None:
        location = os.path.join(output_dir, "tokenizer")
        if not os.path.isdir(location) and is_main_process:
            logger.info("training a %d-token tokenizer on %s", args.tokenizer_vocab_size, args.dataset)
            train_tokenizer_from_source(
                TokenizerTrainingArguments(
                    output_dir=location,
                    dataset=args.dataset,
                    vocab_size=args.tokenizer_vocab_size,
                    max_chars=args.tokenizer_max_chars,
                    model_max_length=args.sequence_len,
                )
            )
        wait_for_everyone()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise UserInputError(f"--tokenizer_name_or_path {location}: cannot load a tokenizer ({err})") from None
    if tokenizer.bos_token_id is None:
        raise UserInputError(f"tokenizer {location}: has no BOS token; nanochat starts every document with <|bos|>")
    if os.path.isfile(os.path.join(location, TOKEN_BYTES_FILENAME)):
        token_bytes = load_token_bytes(location, vocab_size=len(tokenizer))
    else:
        token_bytes = compute_token_bytes(tokenizer)
    return tokenizer, token_bytes


def wait_for_everyone() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def build_model(args: PretrainArguments, config: NanoChatConfig, tokenizer, dtype=None) -> NanoChatForCausalLM:
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    if args.model_name_or_path is not None:
        model = NanoChatForCausalLM.from_pretrained(
            args.model_name_or_path, config=config, attn_implementation=args.attn_implementation
        )
    else:
        config._attn_implementation = args.attn_implementation
        model = NanoChatForCausalLM(config)  # nanochat's from-scratch initialisation
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_core_callback(args: PretrainArguments, tokenizer):
    """The CORE callback when `core_every` is set (its bundle read, checked and tokenized now), else None."""
    if args.core_every <= 0:
        return None
    if args.core_bundle is None:
        raise UserInputError(
            "--core_every needs --core_bundle (a DCLM eval bundle folder, zip, Hub id, or 'embedded')"
        )
    return CoreEvalCallback(
        args.core_bundle, tokenizer, eval_every=args.core_every, max_per_task=args.core_max_per_task
    )


def configure_training_args(training_args: TrainingArguments, plan) -> None:
    """Settings the pretraining data path depends on (see `NanoChatPretrainer`)."""
    training_args.gradient_accumulation_steps = plan.gradient_accumulation_steps
    training_args.max_steps = plan.max_steps
    training_args.remove_unused_columns = False  # keep `shift_labels`: all T targets of a row count
    training_args.ignore_data_skip = True  # the data position is restored from the checkpoint, not replayed
    training_args.dataloader_num_workers = 0  # tokenization runs in-process (the Rust tokenizer is parallel)
    # Evaluation runs through ValBpbCallback (bits per byte), not Trainer.evaluate.
    training_args.eval_strategy = "no"


def describe(
    args: PretrainArguments, config: NanoChatConfig, plan, training_args, num_params: int, memory=None
) -> dict:
    matmul_flops = flops_per_token(ModelShape.from_config(config))
    return {
        "model": {
            "depth": config.n_layer,
            "width": config.n_embd,
            "heads": config.n_head,
            "vocab_size": config.vocab_size,
            "sequence_len": args.sequence_len,
            "parameters": num_params,
            "flops_per_token": matmul_flops,
        },
        "batch": {
            "tokens_per_step": plan.total_batch_size,
            "micro_batch": plan.per_device_train_batch_size,
            "processes": plan.world_size,
            "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        },
        "horizon": {
            "steps": plan.max_steps,
            "total_tokens": plan.total_tokens,
            "tokens_per_parameter": round(plan.tokens_per_param, 3),
            "decided_by": plan.horizon_source,
            "total_flops": float(matmul_flops) * plan.total_tokens,
        },
        "data": {"dataset": args.dataset, "tokenizer": args.tokenizer_name_or_path or "trained on the dataset"},
        **({"memory": {**memory.describe(), "fp8": args.fp8}} if memory is not None else {}),
        "optimizer": {
            "matrix_lr": args.matrix_lr,
            "embedding_lr": args.embedding_lr,
            "unembedding_lr": args.unembedding_lr,
            "warmup_ratio": args.warmup_ratio,
            "warmdown_ratio": args.warmdown_ratio,
            "final_lr_frac": args.final_lr_frac,
            "max_grad_norm": training_args.max_grad_norm,
        },
        "output_dir": training_args.output_dir,
    }


def print_settings(settings: dict) -> None:
    print("Resolved pretraining settings:")
    for section, values in settings.items():
        if isinstance(values, dict):
            print(f"  {section}:")
            for key, value in values.items():
                shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
                if isinstance(value, float) and value > 1e6:
                    shown = f"{value:.4e}"
                print(f"    {key:<28} {shown}")
        else:
            print(f"  {section:<30} {values}")


def print_hardware_plan(args: PretrainArguments, config: NanoChatConfig, plan, training_args) -> None:
    """The planner's memory/time/energy estimate for this run on the named (or detected) GPU."""
    from ..hardware import detect_gpu
    from ..planner import DEFAULT_PRICE_PER_KWH, make_plan, render_plan

    gpu = args.gpu or detect_gpu()
    if gpu is None:
        print("\nNo GPU detected and no --gpu given: for memory and time estimates run e.g.")
        print(f"  nanochat-hf plan --depth {config.n_layer} --gpu rtx4070")
        return
    hardware_plan = make_plan(
        config.n_layer,
        gpu=gpu,
        memory_mode=args.memory_mode,
        knob_overrides=knob_overrides(args, training_args),
        shape=ModelShape.from_config(config),
        tokens=plan.total_tokens,
        total_batch_tokens=plan.total_batch_size,
        price_per_kwh=args.price_per_kwh if args.price_per_kwh is not None else DEFAULT_PRICE_PER_KWH,
        currency=args.currency,
    )
    print()
    print(render_plan(hardware_plan))


# ---------------------------------------------------------------------------------------------------------
# The recipe


def parse_pretrain_arguments(argv: list[str], default_config: str | None = None):
    """(PretrainArguments, TrainingArguments) from `--config file.yaml` plus `--key value` overrides."""
    from trl import TrlParser

    argv = list(argv)
    if default_config is not None and "--config" not in argv:
        argv = ["--config", default_config, *argv]
    dry_run = any(arg.split("=")[0] in ("--dry_run", "--dry-run") for arg in argv)
    if (
        dry_run
        and not torch.cuda.is_available()
        and not any(arg.startswith(("--use_cpu", "--use-cpu")) for arg in argv)
    ):
        # A dry run only plans; let a GPU config (bf16) be planned on a machine without a GPU.
        argv += ["--use_cpu", "true"]
    parser = TrlParser((PretrainArguments, TrainingArguments))
    args, training_args = parser.parse_args_and_config(argv)
    # Without a micro-batch in the YAML or on the command line, the planner chooses it (on a GPU).
    args.micro_batch_from_planner = not _sets_option(argv, "per_device_train_batch_size")
    return args, training_args


def _sets_option(argv: list[str], name: str) -> bool:
    """Whether `--name` is on the command line or a key of the `--config` YAML."""
    spellings = (f"--{name}", f"--{name.replace('_', '-')}")
    if any(arg.split("=")[0] in spellings for arg in argv):
        return True
    for index, arg in enumerate(argv):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg == "--config" and index + 1 < len(argv):
            path = argv[index + 1]
        if path is not None:
            import yaml

            with open(path, encoding="utf-8") as f:
                if name in (yaml.safe_load(f) or {}):
                    return True
    return False


def run_pretraining(args: PretrainArguments, training_args: TrainingArguments, extra_callbacks=()):
    """Train (or with `args.dry_run`, only plan) a nanochat base model. Returns the final model folder.

    `extra_callbacks` are added to the Trainer after the built-in metric callbacks.
    """
    if training_args.output_dir is None:
        raise UserInputError("--output_dir is required")
    world_size, rank = training_args.world_size, training_args.process_index
    set_seed(training_args.seed)

    tokenizer_dir = args.tokenizer_name_or_path or os.path.join(training_args.output_dir, "tokenizer")
    if args.dry_run and not os.path.isdir(tokenizer_dir):
        # A dry run trains nothing: plan with the vocabulary the tokenizer will have.
        logger.info("dry run: tokenizer %s not found; assuming %d tokens", tokenizer_dir, args.tokenizer_vocab_size)
        tokenizer, vocab_size = None, args.tokenizer_vocab_size
    else:
        tokenizer, token_bytes = load_or_train_tokenizer(
            args, training_args.output_dir, is_main_process=training_args.process_index == 0
        )
        vocab_size = len(tokenizer)
    config = resolve_model_config(args, vocab_size=vocab_size)
    with torch.device("meta"):
        num_params = NanoChatForCausalLM(config).num_parameters()
    # Memory mode and knobs: a mode that cannot fit the GPU, or FP8 where it cannot run, fails here.
    memory = resolve_memory_setup(args, training_args, config, world_size=world_size)
    if memory.micro_batch is not None:
        training_args.per_device_train_batch_size = memory.micro_batch
    if args.fp8:
        check_fp8_support(training_args.device)
    plan = plan_training(
        num_params=num_params,
        total_batch_size=args.total_batch_size,
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        sequence_len=args.sequence_len,
        world_size=world_size,
        max_steps=training_args.max_steps,
        target_tokens=args.target_tokens,
        target_param_data_ratio=args.target_param_data_ratio,
    )
    settings = describe(args, config, plan, training_args, num_params, memory)
    if args.dry_run:
        print_settings(settings)
        print_hardware_plan(args, config, plan, training_args)
        return None

    # Open the data before building anything large: a bad path or a missing column fails here.
    train_dataset, val_dataset = build_pretrain_datasets(
        args.dataset, tokenizer, args.sequence_len, rank=rank, world_size=world_size, seed=training_args.data_seed
    )
    core_callback = build_core_callback(args, tokenizer)  # the bundle is checked before the model is built
    configure_training_args(training_args, plan)
    model = build_model(args, config, tokenizer)
    if args.fp8:
        enable_fp8(model)
    if training_args.process_index == 0:
        print_settings(settings)

    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if training_args.process_index == 0:
        set_aside_incomplete(training_args.output_dir)
    wait_for_everyone()
    if resume is not None:
        logger.info("resuming from %s", resume)
        load_data_state(train_dataset, resume)

    trainer = NanoChatPretrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        optimizer_settings={
            "matrix_lr": args.matrix_lr,
            "embedding_lr": args.embedding_lr,
            "unembedding_lr": args.unembedding_lr,
        },
        schedule_settings={
            "warmup_ratio": args.warmup_ratio,
            "warmdown_ratio": args.warmdown_ratio,
            "final_lr_frac": args.final_lr_frac,
        },
        run_settings=settings,
        memory_knobs=memory.knobs,
    )
    callbacks = [
        ThroughputCallback(
            sequence_len=args.sequence_len, flops_per_token=settings["model"]["flops_per_token"], gpu=args.gpu
        ),
        EnergyCallback(price_per_kwh=args.price_per_kwh, currency=args.currency, gpu=args.gpu),
    ]
    if args.eval_every > 0:
        callbacks.append(
            ValBpbCallback(val_dataset, token_bytes, eval_every=args.eval_every, eval_tokens=args.eval_tokens)
        )
    if core_callback is not None:
        callbacks.append(core_callback)
    if args.sample_every > 0:
        callbacks.append(
            SampleCallback(
                tokenizer,
                prompts=args.sample_prompts,
                sample_every=args.sample_every,
                max_new_tokens=args.sample_max_new_tokens,
            )
        )
    add_metric_callbacks(trainer, *callbacks)
    for callback in extra_callbacks:
        trainer.add_callback(callback)

    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)

    final_dir = Path(training_args.output_dir) / "final"
    trainer.save_model(str(final_dir))
    if trainer.is_world_process_zero():
        (final_dir / "run_settings.json").write_text(json.dumps(settings, indent=2, default=str))
        trainer.state.save_to_json(str(final_dir / "trainer_state.json"))
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message=f"nanochat d{config.n_layer} base model, step {trainer.state.global_step}")
    return final_dir


__all__ = ["run_pretraining", "PretrainArguments", "resolve_model_config", "load_or_train_tokenizer"]
