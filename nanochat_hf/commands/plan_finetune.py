"""`nanochat-hf plan-finetune --depth 32 --gpu rtx4070`: GPU memory of full / LoRA / QLoRA chat fine-tuning."""

import json
import sys

from nanochat_hf.defaults import SEQUENCE_LEN
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.finetune import METHODS, OPTIMIZERS, plan_finetune, plan_rl, render_finetune_plan


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan-finetune",
        help="plan chat fine-tuning (SFT/midtraining): GPU memory of full, LoRA and QLoRA fine-tuning on a GPU",
        description=(
            "Compute, without a GPU, the GPU memory of fine-tuning a nanochat model with recipes/sft.py: a full "
            "fine-tune with nanochat's optimizer, LoRA on a bf16 base and QLoRA on an NF4 base, component by "
            "component (frozen base, adapters, gradients, optimizer state, activations, logits, CUDA context). "
            "Exits 1 when none of the requested methods fits."
        ),
    )
    parser.add_argument("--depth", type=int, default=32, help="model depth (default 32: the released d32)")
    parser.add_argument("--gpu", default="rtx4070", help="GPU key or name from nanochat_hf/planning/gpus.csv")
    parser.add_argument(
        "--method", choices=METHODS, action="append", help=f"only this method (repeatable; default: all of {METHODS})"
    )
    parser.add_argument("--micro-batch", "--micro_batch", type=int, default=1, help="rows per forward pass")
    parser.add_argument(
        "--sequence-len", "--sequence_len", type=int, default=SEQUENCE_LEN, help=f"tokens per row ({SEQUENCE_LEN})"
    )
    parser.add_argument("--lora-r", "--lora_r", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument(
        "--optimizer", choices=OPTIMIZERS, help="default: nanochat (full), adamw (lora), paged_adamw_8bit (qlora)"
    )
    parser.add_argument(
        "--loss-chunk-size", "--loss_chunk_size", type=int, help="tokens per chunk of the loss (default: unchunked)"
    )
    parser.add_argument(
        "--no-checkpointing", action="store_true", help="without per-block activation checkpointing (default: on)"
    )
    rl = parser.add_argument_group("RL (recipes/rl.py): the policy's fine-tune plus the rollouts' memory")
    rl.add_argument("--rl", action="store_true", help="plan an RL run instead of SFT")
    rl.add_argument("--num-generations", type=int, default=16, help="samples per question (default 16)")
    rl.add_argument("--max-new-tokens", type=int, default=256, help="tokens per sample (default 256)")
    rl.add_argument("--prompt-len", type=int, default=256, help="the longest prompt in tokens (default 256)")
    parser.add_argument("--json", action="store_true", help="print every plan as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.micro_batch < 1 or args.sequence_len < 1 or args.lora_r < 1:
        raise UserInputError("--micro-batch, --sequence-len and --lora-r must be positive")
    plans = []
    for method in args.method or METHODS:
        common = dict(
            gpu=args.gpu,
            micro_batch=args.micro_batch,
            lora_r=args.lora_r,
            optimizer=args.optimizer,
            activation_checkpointing=not args.no_checkpointing,
            loss_chunk_size=args.loss_chunk_size,
        )
        if args.rl:
            plan = plan_rl(
                args.depth,
                method,
                num_generations=args.num_generations,
                max_new_tokens=args.max_new_tokens,
                prompt_len=args.prompt_len,
                **common,
            )
        else:
            plan = plan_finetune(args.depth, method, sequence_len=args.sequence_len, **common)
        plans.append(plan)
    if args.json:
        sys.stdout.write(json.dumps([plan.to_dict() for plan in plans], indent=2) + "\n")
    else:
        print("\n\n".join(render_finetune_plan(plan) for plan in plans))
    return 0 if any(plan.fits for plan in plans) else 1
