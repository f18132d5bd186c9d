"""Base-model pretraining as nanochat generation 1 does it, through the transformers `Trainer`.

`run_pretraining(args, training_args)` is the whole recipe; `recipes/pretrain.py` only parses the YAML
and command line into the two dataclasses (`parse_pretrain_arguments`). Order of work, chosen so that
every mistake in the settings surfaces before anything slow starts: open the tokenizer, resolve the
model shape at the run's sequence length (the one `sequence_len` of the run: memory, FLOPs, data and
MFU all use it), choose the memory mode, settle batch and horizon, then (unless `dry_run`) open the
data, settle the `TrainingArguments` in one place, build the model and train.
"""

import dataclasses
import logging
import os
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from ..callbacks import EnergyCallback, SampleCallback, ThroughputCallback, ValBpbCallback, add_metric_callbacks
from ..callbacks.core_eval import CoreEvalCallback
from ..configuration_nanochat_hf import NanoChatHFConfig
from ..cpu_threads import set_training_cpu_threads
from ..data.pretrain import DEFAULT_PACKING, build_pretrain_datasets, load_data_state
from ..errors import UserInputError
from ..fp8 import check_fp8_support, enable_fp8
from ..loading import check_config_size, check_vocabulary, open_config, open_model, open_tokenizer
from ..modeling_nanochat_hf import NanoChatHFForCausalLM
from ..optim.setup_gen2 import Gen2Training, build_gen2_training
from ..planning.flops import ModelShape, flops_per_token
from ..planning.horizon import Horizon, gradient_accumulation_steps, plan_horizon
from ..tokenizer import TokenizerTrainingArguments, compute_token_bytes, load_token_bytes, train_tokenizer_from_source
from ..tokenizer.token_bytes import TOKEN_BYTES_FILENAME
from .arguments import PretrainArguments
from .checkpoints import prepare_output_dir, resolve_resume_checkpoint
from .memory import MemorySetup, knob_overrides, resolve_memory_setup
from .pretrain_gen2 import describe_gen2_optimizer, gen2_settings, horizon_of_gen2_plan
from .pretrain_trainer import CHECKPOINT_FILES, NanoChatPretrainer
from .reporting import check_reporters
from .run_printout import print_hardware_plan, print_settings


logger = logging.getLogger(__name__)

# The Trainer's own default micro-batch, used where no planner chooses one (a run on the CPU).
DEFAULT_MICRO_BATCH = 8


# ---------------------------------------------------------------------------------------------------------
# Parts


def resolve_model_config(args: PretrainArguments, vocab_size: int) -> NanoChatHFConfig:
    """The shape to train: a preset/depth with the tokenizer's vocabulary, or an existing model's config."""
    if args.model_name_or_path is not None:
        config = open_config(args.model_name_or_path)
        if config.generation != args.generation:
            raise UserInputError(
                f"{args.model_name_or_path} is a generation-{config.generation} model; set --generation "
                f"{config.generation} to continue it (its recipe defaults differ)"
            )
        check_vocabulary(vocab_size, config, args.model_name_or_path)
        if args.sequence_len > config.sequence_len:
            raise UserInputError(
                f"--sequence_len {args.sequence_len} is beyond the model's sequence_len {config.sequence_len}"
            )
        return config
    try:
        shape = dict(vocab_size=vocab_size, sequence_len=args.sequence_len, generation=args.generation)
        if args.window_pattern is not None:
            depth = (
                args.depth if args.depth is not None else NanoChatHFConfig.from_preset(args.preset, **shape).n_layer
            )
            if len(args.window_pattern) > depth:
                raise UserInputError(
                    f"--window_pattern {args.window_pattern!r} has {len(args.window_pattern)} letters for a "
                    f"{depth}-layer model; it is tiled over the layers, so give at most {depth}"
                )
            shape["window_pattern"] = args.window_pattern
        if args.preset is not None:
            config = NanoChatHFConfig.from_preset(args.preset, **shape)
        else:
            config = NanoChatHFConfig.from_depth(args.depth, **shape)
    except ValueError as err:
        raise UserInputError(f"--depth/--preset: {err}") from None
    check_config_size(config, args.preset or f"d{args.depth}", "--depth/--preset")
    return config


def resolve_packing(args: PretrainArguments, config: NanoChatHFConfig) -> str:
    """The row packing: as set, or (auto) the model generation's own, nanochat's streaming rows for generation 1."""
    return DEFAULT_PACKING[getattr(config, "generation", 1)] if args.packing == "auto" else args.packing


def run_shape(args: PretrainArguments, config: NanoChatHFConfig) -> ModelShape:
    """The model as this run trains it: its shapes, at the run's rows of `sequence_len` tokens."""
    return dataclasses.replace(ModelShape.from_config(config), sequence_len=args.sequence_len)


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
    tokenizer = open_tokenizer(location)
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


def build_model(args: PretrainArguments, config: NanoChatHFConfig, tokenizer) -> NanoChatHFForCausalLM:
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    if args.model_name_or_path is not None:
        model = open_model(args.model_name_or_path, config=config, attn_implementation=args.attn_implementation)
    else:
        config._attn_implementation = args.attn_implementation
        model = NanoChatHFForCausalLM(config)  # nanochat's from-scratch initialisation
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


def settle_training_args(
    training_args: TrainingArguments,
    *,
    micro_batch: int,
    accumulation: int,
    horizon: Horizon,
    memory: MemorySetup,
    gen2: Gen2Training | None = None,
) -> None:
    """Every TrainingArguments value the run decides, set here and nowhere else, before the Trainer is built."""
    if gen2 is not None:
        for name, value in gen2.trainer_arguments().items():  # no gradient clipping in generation 2
            setattr(training_args, name, value)
    training_args.per_device_train_batch_size = micro_batch
    training_args.gradient_accumulation_steps = accumulation
    training_args.max_steps = horizon.steps
    training_args.remove_unused_columns = False  # keep `shift_labels`: all T targets of a row count
    training_args.ignore_data_skip = True  # the data position is restored from the checkpoint, not replayed
    training_args.dataloader_num_workers = 0  # tokenization runs in-process (the Rust tokenizer is parallel)
    training_args.eval_strategy = "no"  # evaluation runs through ValBpbCallback (bits per byte)
    if training_args.ddp_find_unused_parameters is None:
        # Every parameter takes part in every forward pass, so DDP need not search for unused ones (the
        # search costs a graph walk per step, and warns on every multi-process run when it finds none).
        training_args.ddp_find_unused_parameters = False
    if memory.knobs.activation_checkpointing == "block" and not training_args.activation_checkpointing:
        # The Trainer enables it at train() through the model's own activation_checkpointing_enable.
        training_args.activation_checkpointing = training_args.gradient_checkpointing = True
        if not training_args.activation_checkpointing_kwargs:
            training_args.activation_checkpointing_kwargs = {"use_reentrant": False}
            training_args.gradient_checkpointing_kwargs = training_args.activation_checkpointing_kwargs


def describe(
    args: PretrainArguments,
    config: NanoChatHFConfig,
    shape: ModelShape,
    horizon: Horizon,
    training_args,
    *,
    micro_batch: int,
    accumulation: int,
    memory: MemorySetup | None = None,
    gen2: Gen2Training | None = None,
) -> dict:
    return {
        "model": {
            "generation": config.generation,
            "depth": config.n_layer,
            "width": config.n_embd,
            "heads": config.n_head,
            "vocab_size": config.vocab_size,
            "sequence_len": shape.sequence_len,
            "parameters": horizon.num_params,
            "flops_per_token": horizon.flops_per_token,
        },
        "batch": {
            "tokens_per_step": horizon.total_batch_size,
            "micro_batch": micro_batch,
            "processes": training_args.world_size,
            "gradient_accumulation_steps": accumulation,
        },
        "horizon": {
            "steps": horizon.steps,
            "total_tokens": horizon.tokens,
            "tokens_per_parameter": round(horizon.tokens_per_param, 3),
            **({"tokens_per_scaling_parameter": round(gen2.plan.tokens_per_scaling_param, 3)} if gen2 else {}),
            "decided_by": horizon.source,
            "total_flops": float(horizon.flops_per_token) * horizon.tokens,
        },
        "data": {
            "dataset": args.dataset,
            "packing": resolve_packing(args, config),
            "tokenizer": args.tokenizer_name_or_path or "trained on the dataset",
        },
        **({"memory": {**memory.describe(), "fp8": args.fp8}} if memory is not None else {}),
        "optimizer": describe_optimizer(args, training_args, gen2),
        "output_dir": training_args.output_dir,
    }


def describe_optimizer(args: PretrainArguments, training_args, gen2: Gen2Training | None) -> dict:
    if gen2 is None:
        return {
            "matrix_lr": args.matrix_lr,
            "embedding_lr": args.embedding_lr,
            "unembedding_lr": args.unembedding_lr,
            "sharded_optimizer": args.sharded_optimizer,
            "warmup_ratio": args.warmup_ratio,
            "warmdown_ratio": args.warmdown_ratio,
            "final_lr_frac": args.final_lr_frac,
            "max_grad_norm": training_args.max_grad_norm,
        }
    return describe_gen2_optimizer(gen2)


# ---------------------------------------------------------------------------------------------------------
# The recipe


def run_pretraining(args: PretrainArguments, training_args: TrainingArguments, extra_callbacks=()):
    """Train (or with `training_args.dry_run`, only plan) a nanochat base model. Returns the final model folder.

    `extra_callbacks` are added to the Trainer after the built-in metric callbacks.
    """
    if training_args.output_dir is None:
        raise UserInputError("--output_dir is required")
    check_reporters(training_args.report_to)  # a missing tensorboard fails here, dry runs included
    dry_run = getattr(training_args, "dry_run", False)
    world_size, rank = training_args.world_size, training_args.process_index
    set_seed(training_args.seed)

    tokenizer_dir = args.tokenizer_name_or_path or os.path.join(training_args.output_dir, "tokenizer")
    if dry_run and not os.path.isdir(tokenizer_dir):
        # A dry run trains nothing: plan with the vocabulary the tokenizer will have.
        logger.info("dry run: tokenizer %s not found; assuming %d tokens", tokenizer_dir, args.tokenizer_vocab_size)
        tokenizer, vocab_size = None, args.tokenizer_vocab_size
    else:
        tokenizer, token_bytes = load_or_train_tokenizer(
            args, training_args.output_dir, is_main_process=training_args.process_index == 0
        )
        vocab_size = len(tokenizer)
    config = resolve_model_config(args, vocab_size=vocab_size)
    shape = run_shape(args, config)
    with torch.device("meta"):
        meta_model = NanoChatHFForCausalLM(config)
    num_params = meta_model.num_parameters()
    gen2 = None
    if config.generation == 2:
        # The plan (batch, updates, scaled LRs and weight decay) from the model's own parameters; the
        # optimizer itself is built again on the real model by the Trainer.
        if args.target_tokens:
            raise UserInputError("--target_tokens is generation 1's; generation 2 sets --target_param_data_ratio")
        if args.sharded_optimizer != "auto":
            raise UserInputError(
                f"--sharded_optimizer {args.sharded_optimizer}: the sharded optimizers are generation 1's in the "
                "Trainer for now; generation 2 trains on one process or with DDP (replicated state)"
            )
        gen2 = build_gen2_training(meta_model, gen2_settings(args, training_args))
        horizon = horizon_of_gen2_plan(gen2, num_params, flops_per_token(shape))
    del meta_model
    total_batch_size = horizon.total_batch_size if gen2 is not None else args.total_batch_size
    # Memory mode and knobs: a mode that cannot fit the GPU, or FP8 where it cannot run, fails here.
    memory = resolve_memory_setup(
        args,
        training_args,
        shape,
        world_size=world_size,
        generation=config.generation,
        total_batch_size=total_batch_size,
    )
    if args.fp8 and not dry_run:  # a dry run plans for the training machine, which may not be this one
        check_fp8_support(training_args.device)
    micro_batch = training_args.per_device_train_batch_size or memory.micro_batch or DEFAULT_MICRO_BATCH
    accumulation = gradient_accumulation_steps(total_batch_size, micro_batch, shape.sequence_len, world_size)
    if gen2 is None:
        horizon = plan_horizon(
            num_params,
            flops_per_token(shape),
            total_batch_size=args.total_batch_size,
            max_steps=training_args.max_steps,
            target_tokens=args.target_tokens,
            target_param_data_ratio=args.target_param_data_ratio,
        )
    settings = describe(
        args,
        config,
        shape,
        horizon,
        training_args,
        micro_batch=micro_batch,
        accumulation=accumulation,
        memory=memory,
        gen2=gen2,
    )
    if dry_run:
        print_settings(settings)
        if gen2 is not None:
            print("\nGeneration 2 optimizer and horizon:")
            print(gen2.describe(flops_per_token=horizon.flops_per_token))
        else:
            print_hardware_plan(args, shape, horizon, knob_overrides(args, training_args))
        return None
    set_training_cpu_threads(training_args, logger)

    # Open the data before building anything large: a bad path or a missing column fails here.
    train_dataset, val_dataset = build_pretrain_datasets(
        args.dataset,
        tokenizer,
        shape.sequence_len,
        rank=rank,
        world_size=world_size,
        seed=training_args.data_seed,
        packing=resolve_packing(args, config),
    )
    settle_training_args(
        training_args, micro_batch=micro_batch, accumulation=accumulation, horizon=horizon, memory=memory, gen2=gen2
    )
    core_callback = build_core_callback(args, tokenizer)  # the bundle is checked before the model is built
    model = build_model(args, config, tokenizer)
    if args.fp8:
        converted = enable_fp8(model)
        logger.info("fp8: %d Linear layers train with FP8 matmuls: %s", len(converted), ", ".join(converted))
    if training_args.process_index == 0:
        print_settings(settings)

    resume = resolve_resume_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir, CHECKPOINT_FILES
    )
    if training_args.process_index == 0:
        prepare_output_dir(training_args.output_dir, CHECKPOINT_FILES)
    wait_for_everyone()
    if resume is not None:
        logger.info("resuming from %s", resume)
        load_data_state(train_dataset, resume)

    trainer = NanoChatPretrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        optimizer_settings=None
        if gen2 is not None
        else {
            "matrix_lr": args.matrix_lr,
            "embedding_lr": args.embedding_lr,
            "unembedding_lr": args.unembedding_lr,
            "sharded_optimizer": args.sharded_optimizer,
            "adamw_matrix_lr": args.adamw_matrix_lr,
        },
        schedule_settings={
            "warmup_ratio": args.warmup_ratio,
            "warmdown_ratio": args.warmdown_ratio,
            "final_lr_frac": args.final_lr_frac,
        },
        gen2_settings=gen2.settings if gen2 is not None else None,
        run_settings=settings,
        memory_knobs=memory.knobs,
    )
    callbacks = [
        ThroughputCallback(sequence_len=shape.sequence_len, flops_per_token=horizon.flops_per_token, gpu=args.gpu),
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

    trainer.train_from(resume)

    final_dir = trainer.save_final(Path(training_args.output_dir) / "final")
    if training_args.push_to_hub:
        trainer.push_to_hub(
            commit_message=f"nanochat d{config.n_layer} (generation {config.generation}) base model, "
            f"step {trainer.state.global_step}"
        )
    return final_dir
