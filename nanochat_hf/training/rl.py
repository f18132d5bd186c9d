"""Reinforcement learning on GSM8K-style problems (nanochat's `chat_rl`) with trl's `GRPOTrainer`.

`recipes/rl.py` only parses a YAML into (RLArguments, NanoChatGRPOConfig, ModelConfig) and calls `run_rl`.

The algorithm is nanochat's: per question, `num_generations` samples from the current policy; reward =
the exact final answer; advantage = reward - the group's mean; no KL, no reference model; a token-level
mean of -logp x advantage per pass of sequences (see `rl_arguments.py` for the GRPOConfig values).

Rollouts go through `trl`'s `rollout_func` hook into this package's `ChatEngine`, the same tool loop that
`nanochat-hf chat` runs: the model samples, `<|python_end|>` closes a calculator call, the safe calculator
evaluates it (a malformed call gets its error message as the output, never an exception) and the engine
forces `<|output_start|>result<|output_end|>`. Each rollout returns its tokens with `env_mask` - 1 for a
sampled token, 0 for a forced one - which trl multiplies into the completion mask, so forced tool output
carries no loss weight. A finished reply ends with its `<|assistant_end|>`, also masked: as in nanochat,
the terminal token is never reinforced (trl still sees that the completion ended).

Sampling is seeded per sample from (seed, step, process, index), so a resumed run draws the same rollouts
as an uninterrupted one. Logged through the Trainer (every `report_to` backend): `reward`,
`rewards/exact_answer_reward/mean` (and the format reward's), `pass@k` over each question's samples,
`completions/mean_length` (sampled tokens only), and the same with `eval_` for the held-out slice.

The optimizer is nanochat's Muon + AdamW at 0.05 x the base LRs, multiplier 1 - step/steps, for a full
model; LoRA/QLoRA use the Trainer's (`--optimizer trainer`, `--optim`, `--learning_rate`). The final folder
(`output_dir/final`) is a normal chat model (or adapter), like SFT's.
"""

import json
import logging
import zlib
from pathlib import Path

import torch
from transformers import set_seed
from trl import GRPOTrainer, ModelConfig

from ..chat.adapters import write_base_fingerprint
from ..chat.engine import ChatEngine
from ..cpu_threads import set_training_cpu_threads
from ..errors import UserInputError
from ..loading import check_vocabulary, open_config
from ..tokenizer import render_conversation_with_mask
from ..tokenizer.special_tokens import ASSISTANT_END
from .checkpoints import prepare_output_dir, resolve_resume_checkpoint
from .model_card import CHAT_USAGE
from .rl_arguments import RLArguments, accumulation_for
from .rl_data import GSM8K_REPO, SYNTHETIC_SOURCE, load_problems
from .rl_rewards import (
    check_reward_functions,
    exact_answer_reward,
    format_reward,
    pass_at_k,
    pass_at_k_values,
    reward_name,
)
from .sft import describe_finetune_optimizer, load_chat_tokenizer, load_model, peft_config_for
from .stage import NanoChatTrainerMixin


logger = logging.getLogger(__name__)

FINAL_DIRNAME = "final"
PROBE_ROWS = 4


# ---------------------------------------------------------------------------------------------------------
# Rollouts through the chat engine


def sample_seed(seed: int, step: int, process: int, index: int, mode: str) -> int:
    """A 31-bit sampling seed for one rollout, the same on every machine and run."""
    return zlib.crc32(f"{mode}:{seed}:{step}:{process}:{index}".encode()) & 0x7FFFFFFF


class EngineRollout:
    """trl `rollout_func`: each prompt of the process's slice (already repeated per sample) -> one reply.

    Returns `prompt_ids`, `completion_ids`, `env_mask` (1 sampled, 0 forced) and `logprobs` None (the
    rollouts are on-policy, trl computes the log-probabilities itself). `generate_kwargs` go to every
    `model.generate()` call (e.g. a `logits_processor`).
    """

    def __init__(self, tokenizer, generate_kwargs: dict | None = None):
        self.tokenizer = tokenizer
        self.generate_kwargs = dict(generate_kwargs or {})
        self.assistant_end = tokenizer.convert_tokens_to_ids(ASSISTANT_END)
        self.last_replies = []  # AssistantReply of the last call, for inspection

    def __call__(self, prompts, trainer) -> dict:
        model = trainer.accelerator.unwrap_model(trainer.model)
        mode = "train" if trainer.model.training else "eval"
        engine = ChatEngine(model, self.tokenizer)
        args = trainer.args
        process = trainer.accelerator.process_index
        device = next(model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        output = {"prompt_ids": [], "completion_ids": [], "env_mask": [], "logprobs": None}
        self.last_replies = []
        was_training = model.training
        model.eval()
        try:
            # The Trainer's own random state is left untouched; sampling runs in the training's mixed precision.
            with torch.random.fork_rng(devices=devices), trainer.accelerator.autocast():
                for index, messages in enumerate(prompts):
                    reply = engine.generate(
                        messages,
                        max_new_tokens=args.max_completion_length,
                        temperature=args.temperature,
                        top_k=args.top_k or None,
                        seed=sample_seed(args.seed, trainer.state.global_step, process, index, mode),
                        **self.generate_kwargs,
                    )
                    ids, mask = list(reply.token_ids), list(reply.sampled_mask)
                    if reply.finished:  # the terminal token: seen by trl, never reinforced
                        ids.append(self.assistant_end)
                        mask.append(0)
                    output["prompt_ids"].append(engine.prompt_ids(messages))
                    output["completion_ids"].append(ids)
                    output["env_mask"].append(mask)
                    self.last_replies.append(reply)
        finally:
            model.train(was_training)
        return output


# ---------------------------------------------------------------------------------------------------------
# The trainer


class NanoChatGRPOTrainer(NanoChatTrainerMixin, GRPOTrainer):
    """`GRPOTrainer` with nanochat's optimizer/schedule (when given), pass@k logging and chat model cards."""

    @property
    def is_adapter(self) -> bool:
        return getattr(self.model, "peft_config", None) is not None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        names = list(self.reward_func_names)
        if exact_answer_reward.__name__ in names:
            mode = "train" if self.model.training else "eval"
            group = self.num_generations if mode == "train" else self.num_generations_eval
            correct = rewards_per_func[:, names.index(exact_answer_reward.__name__)] > 0.5  # every process's
            per_question = correct.view(-1, group).sum(dim=1).tolist()
            for k in pass_at_k_values(group):
                value = sum(pass_at_k(group, int(c), k) for c in per_question) / len(per_question)
                self._metrics[mode][f"pass@{k}"].append(value)
        return rewards_per_func

    def model_card_words(self) -> dict:
        settings = self.run_settings
        what = (
            f"A LoRA adapter for `{settings['base_model']}` ({settings['method']})"
            if self.is_adapter
            else f"Fine-tuned from `{settings['base_model']}`"
        )
        return {
            "title": f"nanochat d{settings['model']['depth']} chat model (RL)",
            "description": (
                f"{what} by reinforcement learning on {settings['data']['dataset']} with nanochat-hf (trl "
                "`GRPOTrainer`, nanochat's settings),\nin nanochat's chat format: stop token `<|assistant_end|>`, "
                "calculator tool calls between `<|python_start|>` and `<|python_end|>`."
            ),
            "usage": CHAT_USAGE,
            "tags": ("nanochat", "nanochat-hf", "chat", "grpo"),
            "library": "peft" if self.is_adapter else "transformers",
        }

    def write_final_files(self, folder: Path) -> None:
        if self.is_adapter:
            write_base_fingerprint(folder, self.run_settings["base_model"])


# ---------------------------------------------------------------------------------------------------------
# Checks and settings


def resolve_optimizer(args: RLArguments, model_args) -> str:
    if not model_args.model_name_or_path:
        raise UserInputError("--model_name_or_path is required (an SFT chat model folder or Hub id)")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        raise UserInputError(
            "--load_in_4bit/--load_in_8bit: quantized weights are frozen; add --use_peft true (QLoRA)"
        )
    optimizer = args.optimizer if args.optimizer != "auto" else ("trainer" if model_args.use_peft else "nanochat")
    if optimizer == "nanochat" and model_args.use_peft:
        raise UserInputError(
            "--optimizer nanochat trains nanochat's own parameters; with --use_peft use --optimizer trainer"
        )
    return optimizer


def settle_batch(training_args) -> None:
    """Check the batch against the real process count: one optimizer step per batch of samples (on-policy)."""
    per_pass = training_args.per_device_train_batch_size * training_args.world_size
    if training_args.examples_per_step:
        steps = accumulation_for(
            training_args.examples_per_step,
            training_args.num_generations,
            training_args.per_device_train_batch_size,
            training_args.world_size,
        )
        training_args.gradient_accumulation_steps = training_args.steps_per_generation = steps
        training_args.generation_batch_size = per_pass * steps
    if training_args.generation_batch_size % training_args.num_generations:
        raise UserInputError(
            f"--num_generations {training_args.num_generations} does not divide the {training_args.generation_batch_size} "
            "samples generated at a time (--per_device_train_batch_size x processes x --steps_per_generation): "
            "every question needs all its samples in the same batch"
        )


def describe(args, training_args, model_args, optimizer, config, num_train, num_eval) -> dict:
    settings = {
        "stage": "rl",
        "base_model": model_args.model_name_or_path,
        "model": {"depth": config.n_layer, "width": config.n_embd, "vocab_size": config.vocab_size},
        "data": {
            "dataset": GSM8K_REPO if args.dataset == "gsm8k" else args.dataset,
            "questions": num_train,
            "eval_questions": num_eval,
        },
        "sampling": {
            "num_generations": training_args.num_generations,
            "max_completion_length": training_args.max_completion_length,
            "temperature": training_args.temperature,
            "top_k": training_args.top_k,
            "questions_per_step": training_args.generation_batch_size // training_args.num_generations,
        },
        "grpo": {
            "beta": training_args.beta,
            "scale_rewards": training_args.scale_rewards,
            "loss_type": training_args.loss_type,
            "num_iterations": training_args.num_iterations,
        },
        "rewards": {"exact_answer": 1.0, "format": args.format_reward_weight},
        "method": "qlora" if model_args.load_in_4bit else "lora" if model_args.use_peft else "full",
        "optimizer": describe_finetune_optimizer(optimizer, args, training_args),
    }
    return settings


def load_rl_data(args: RLArguments, training_args):
    """(train problems, eval problems or None); eval only when the run evaluates."""
    train = load_problems(
        args.dataset,
        args.dataset_split,
        size=args.synthetic_size if args.dataset == SYNTHETIC_SOURCE else None,
        seed=args.synthetic_seed,
        synthetic_size=args.synthetic_size,
    )
    evaluates = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    if not evaluates:
        return train, None
    source = args.eval_dataset or (args.dataset if args.dataset in ("gsm8k", SYNTHETIC_SOURCE) else None)
    if source is None:
        raise UserInputError(f"--eval_strategy {training_args.eval_strategy}: give --eval_dataset (held-out problems)")
    split = args.eval_dataset_split if source != SYNTHETIC_SOURCE else "train"
    eval_problems = load_problems(
        source,
        split,
        what="--eval_dataset",
        size=args.eval_size,
        seed=args.synthetic_seed,
        held_out=True,
        synthetic_size=args.synthetic_size,
    )
    return train, eval_problems


def check_prompt_lengths(tokenizer, dataset, context: int, what: str) -> None:
    """Every prompt (rendered as the engine renders it) must leave room for at least one new token."""
    for index, row in enumerate(dataset):
        length = len(render_conversation_with_mask(tokenizer, row["prompt"], max_tokens=10**12)[0]) + 1
        if length >= context:
            raise UserInputError(
                f"{what} row {index}: the prompt is {length} tokens, the model's context is {context}; "
                "shorten the question or drop the row"
            )


# ---------------------------------------------------------------------------------------------------------
# The recipe


def build_rl_trainer(
    args: RLArguments, training_args, model_args=None, reward_funcs=(), generate_kwargs=None
) -> NanoChatGRPOTrainer:
    """Check everything, load data and model, and return the trainer (no rollout has run yet).

    `reward_funcs`: extra trl reward functions after the exact-answer (and format) rewards.
    """
    model_args = model_args if model_args is not None else ModelConfig()
    optimizer = resolve_optimizer(args, model_args)
    settle_batch(training_args)
    tokenizer_source = args.tokenizer_name_or_path or model_args.model_name_or_path
    what = "--tokenizer_name_or_path" if args.tokenizer_name_or_path else "--model_name_or_path"
    tokenizer = load_chat_tokenizer(tokenizer_source, what)  # chat template and tool tokens, or a clear error
    config = open_config(model_args.model_name_or_path)
    check_vocabulary(len(tokenizer), config, model_args.model_name_or_path)
    with training_args.main_process_first(desc="loading the RL problems"):
        train_dataset, eval_dataset = load_rl_data(args, training_args)
    check_prompt_lengths(tokenizer, train_dataset, config.sequence_len, "--dataset")
    if eval_dataset is not None:
        check_prompt_lengths(tokenizer, eval_dataset, config.sequence_len, "--eval_dataset")

    funcs = [exact_answer_reward]
    weights = [1.0]
    if args.format_reward_weight > 0:
        funcs.append(format_reward)
        weights.append(args.format_reward_weight)
    for func in reward_funcs:
        funcs.append(func)
        weights.append(1.0)
    if training_args.reward_weights is None:
        training_args.reward_weights = weights
    elif len(training_args.reward_weights) != len(funcs):
        raise UserInputError(
            f"--reward_weights has {len(training_args.reward_weights)} values for {len(funcs)} reward functions "
            f"({', '.join(reward_name(f) for f in funcs)})"
        )
    check_reward_functions(funcs, [train_dataset[i] for i in range(min(PROBE_ROWS, len(train_dataset)))])

    peft_config = peft_config_for(model_args)
    settings = describe(
        args,
        training_args,
        model_args,
        optimizer,
        config,
        len(train_dataset),
        len(eval_dataset) if eval_dataset is not None else 0,
    )
    model = load_model(model_args, training_args, tokenizer)
    optimizer_settings = schedule_settings = None
    if optimizer == "nanochat":
        optimizer_settings = {
            "matrix_lr": args.matrix_lr * args.init_lr_frac,
            "embedding_lr": args.embedding_lr * args.init_lr_frac,
            "unembedding_lr": args.unembedding_lr * args.init_lr_frac,
            "momentum_warmup_steps": 0,
        }
        schedule_settings = {"warmdown_ratio": args.warmdown_ratio}
    return NanoChatGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=EngineRollout(tokenizer, generate_kwargs),
        optimizer_settings=optimizer_settings,
        schedule_settings=schedule_settings,
        run_settings=settings,
    )


def run_rl(args: RLArguments, training_args, model_args=None, reward_funcs=(), extra_callbacks=()) -> Path:
    """RL from a chat (SFT) model; returns the final folder (a chat model, or a LoRA adapter)."""
    final_dir = Path(training_args.output_dir) / FINAL_DIRNAME
    if final_dir.exists():
        raise UserInputError(f"{final_dir}: already exists; choose a new --output_dir or remove it")
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    set_seed(training_args.seed)
    set_training_cpu_threads(training_args, logger)
    trainer = build_rl_trainer(args, training_args, model_args, reward_funcs)
    for callback in extra_callbacks:
        trainer.add_callback(callback)
    if trainer.is_world_process_zero():
        logger.info("RL settings:\n%s", json.dumps(trainer.run_settings, indent=2, default=str))
        prepare_output_dir(training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    trainer.save_final(final_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message=f"nanochat chat model (RL), step {trainer.state.global_step}")
    return final_dir
