"""Greedy completions of fixed prompts during pretraining, printed and logged.

As nanochat generation 1 does (every 2000 steps, 7 fixed prompts, greedy, 16 tokens), each prompt
is BOS + its tokens, so the model sees it as the start of a document. The completions are printed by
the main process and logged as one text value, `samples` (TensorBoard shows it under Text, W&B and
trackio as a string), so the same prompts can be compared across steps and runs.
"""

import contextlib

import torch

from nanochat_hf.callbacks.base import MetricsCallback


NANOCHAT_SAMPLE_EVERY = 2000
# nanochat's fixed sample prompts (scripts/base_train.py): short openings whose right continuation is
# obvious to a reader, so progress shows: a young model continues with noise, a trained one with the fact.
NANOCHAT_SAMPLE_PROMPTS = (
    "The capital of France is",
    "The chemical symbol of gold is",
    "If yesterday was Friday, then tomorrow will be",
    "The opposite of hot is",
    "The planets of the solar system are:",
    "My favorite color is",
    "If 5*x + 3 = 13, then x is",
)


@torch.no_grad()
def greedy_completions(model, tokenizer, prompts, max_new_tokens: int = 16, autocast_dtype=None) -> list[str]:
    """The greedy continuation (decoded text, prompt excluded) of each prompt, each prefixed with BOS."""
    device = next(model.parameters()).device
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    completions = []
    for prompt in prompts:
        ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids], device=device)
        with autocast:
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.bos_token_id,
            )
        completions.append(tokenizer.decode(output[0, len(ids) :], skip_special_tokens=False))
    return completions


class SampleCallback(MetricsCallback):
    """Every `sample_every` steps and at the last step: print and log greedy completions of `prompts`.

    Args:
        tokenizer: defaults to the Trainer's `processing_class`.
        prompts: texts to complete (default: `NANOCHAT_SAMPLE_PROMPTS`).
        sample_every: steps between samples (nanochat: 2000).
        max_new_tokens: tokens generated per prompt (nanochat: 16).
    """

    def __init__(
        self, tokenizer=None, prompts=NANOCHAT_SAMPLE_PROMPTS, sample_every=NANOCHAT_SAMPLE_EVERY, max_new_tokens=16
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.sample_every = sample_every
        self.max_new_tokens = max_new_tokens
        self.history: list[tuple[int, list[str]]] = []  # (step, completions), main process only

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not (state.global_step % self.sample_every == 0 or state.global_step >= state.max_steps):
            return
        # Every process must agree to log this step: the Trainer's log gathers the loss from all of them.
        control.should_log = True
        if not state.is_world_process_zero:
            return  # generation is cheap and needs no other process; one copy is enough
        tokenizer = self.tokenizer or processing_class
        autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        was_training = model.training
        model.eval()
        try:
            completions = greedy_completions(model, tokenizer, self.prompts, self.max_new_tokens, autocast_dtype)
        finally:
            model.train(was_training)
        self.history.append((state.global_step, completions))
        text = "\n".join(f"{prompt}{completion}" for prompt, completion in zip(self.prompts, completions, strict=True))
        print(f"--- samples at step {state.global_step} ---\n{text}", flush=True)
        self.publish({"samples": text})
