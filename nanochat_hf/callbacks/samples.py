"""Greedy completions of fixed prompts during pretraining, printed and logged as a table.

As nanochat generation 1 does (every 2000 steps, 7 fixed prompts, greedy, 16 tokens), each prompt
is BOS + its tokens, so the model sees it as the start of a document; a completion stops at the next
BOS (the model ending the document), which is not part of it. The main process prints one line per
prompt, the prompt and its continuation told apart, and hands the samples to the run's reporters as a
table of (step, prompt, completion): TensorBoard gets a Markdown table under Text (`samples`), W&B a
`wandb.Table`, trackio a `trackio.Table`. They do not go through the Trainer's `logs` (the console
printer would cut a long string to "[String too long to display ...]", and most reporters take scalars
only there). The reporters are found among the Trainer's callbacks that `add_metric_callbacks` hands over;
without them the samples are printed and kept in `history`.
"""

import contextlib

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from nanochat_hf.fp8 import fp8_disabled


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
SAMPLE_COLUMNS = ("step", "prompt", "completion")


@torch.no_grad()
def greedy_completions(model, tokenizer, prompts, max_new_tokens: int = 16, autocast_dtype=None) -> list[str]:
    """The greedy continuation of each BOS-prefixed prompt (decoded text, prompt excluded), up to the next BOS."""
    device = next(model.parameters()).device
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    bos = tokenizer.bos_token_id
    completions = []
    for prompt in prompts:
        ids = [bos] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids], device=device)
        with autocast:
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=bos,  # a new document starts: the continuation is over
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos,
            )
        new = output[0, len(ids) :].tolist()
        if bos in new:
            new = new[: new.index(bos)]
        completions.append(tokenizer.decode(new, skip_special_tokens=False))
    return completions


def samples_header(step: int) -> str:
    return f"--- samples at step {step} (greedy; prompt | continuation) ---"


def sample_line(number: int, prompt: str, completion: str) -> str:
    """One console line: the numbered prompt, then the continuation after a '|' (newlines shown as \\n)."""
    shown = completion.replace("\n", "\\n")
    return f"  {number}. {prompt} |{shown}"


def samples_markdown(rows) -> str:
    """(step, prompt, completion) rows as a Markdown table (what TensorBoard's Text tab renders)."""

    def cell(value) -> str:
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|---|---|---|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def report_samples(callbacks, step: int, rows) -> list[str]:
    """Hand the rows to each reporting integration among `callbacks`; returns the names of those that took them."""
    reached = []
    for callback in callbacks:
        kind = type(callback).__name__
        if kind == "TensorBoardCallback" and getattr(callback, "tb_writer", None) is not None:
            callback.tb_writer.add_text("samples", samples_markdown(rows), step)
            callback.tb_writer.flush()
        elif kind == "WandbCallback" and getattr(getattr(callback, "_wandb", None), "run", None) is not None:
            wandb = callback._wandb
            wandb.log({"samples": wandb.Table(columns=list(SAMPLE_COLUMNS), data=rows), "train/global_step": step})
        elif kind == "TrackioCallback" and getattr(callback, "_initialized", False):
            trackio = callback._trackio
            trackio.log({"samples": trackio.Table(columns=list(SAMPLE_COLUMNS), data=rows), "train/global_step": step})
        else:
            continue
        reached.append(kind)
    return reached


class SampleCallback(TrainerCallback):
    """Every `sample_every` steps and at the last step: print and report greedy completions of `prompts`.

    Args:
        tokenizer: defaults to the Trainer's `processing_class`.
        prompts: texts to complete (default: `NANOCHAT_SAMPLE_PROMPTS`).
        sample_every: steps between samples (nanochat: 2000).
        max_new_tokens: tokens generated per prompt at most (nanochat: 16).
    """

    def __init__(
        self, tokenizer=None, prompts=NANOCHAT_SAMPLE_PROMPTS, sample_every=NANOCHAT_SAMPLE_EVERY, max_new_tokens=16
    ):
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.sample_every = sample_every
        self.max_new_tokens = max_new_tokens
        self.history: list[tuple[int, list[str]]] = []  # (step, completions), main process only
        self.trainer_callbacks: list = []  # the Trainer's callback list, set by add_metric_callbacks

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not (state.global_step % self.sample_every == 0 or state.global_step >= state.max_steps):
            return
        if not state.is_world_process_zero:
            return  # generation is cheap and needs no other process; one copy is enough
        tokenizer = self.tokenizer or processing_class
        autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        # tqdm.write: printed above the Trainer's progress bar instead of through it.
        tqdm.write(samples_header(state.global_step))
        was_training = model.training
        model.eval()
        completions = []
        try:
            with fp8_disabled(model):  # samples in bf16, as nanochat generates during an FP8 run
                for number, prompt in enumerate(self.prompts, start=1):  # each line as soon as it is generated
                    [completion] = greedy_completions(model, tokenizer, [prompt], self.max_new_tokens, autocast_dtype)
                    completions.append(completion)
                    tqdm.write(sample_line(number, prompt, completion))
        finally:
            model.train(was_training)
        self.history.append((state.global_step, completions))
        rows = [[state.global_step, p, c] for p, c in zip(self.prompts, completions, strict=True)]
        report_samples(self.trainer_callbacks, state.global_step, rows)
