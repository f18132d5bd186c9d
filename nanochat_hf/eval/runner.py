"""`nanochat-hf eval`: check everything, load the model once, run the requested tasks, return one dict.

Order of work, so that every mistake surfaces before the model is loaded: task names; the CORE bundle
(every file, task and jsonl line); the chat tasks' datasets (every row); the bpb text source; the opt-in
for executing HumanEval programs; the tokenizer (nanochat's chat template for ChatCORE, single-token
answer letters) and the tokenization of every CORE prompt. Only then is the model loaded and evaluated.
"""

import logging
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, PretrainedConfig

from ..chat.datasets import read_words_file
from ..data.sources import open_text_source
from ..errors import UserInputError
from ..formats import HF_MODEL_TYPE
from ..loading import check_location, open_model, open_tokenizer
from .bpb import check_split, evaluate_text_bpb, find_token_bytes, open_bpb_rows
from .bundle import load_bundle
from .chat_tasks import TASK_NAMES as CHAT_TASK_NAMES
from .chat_tasks import check_tokenizer_for_tasks, load_chat_task
from .chatcore import evaluate_chat
from .core import bos_token_id, prepare_core, score_core
from .sandbox import Sandbox


logger = logging.getLogger(__name__)

CHATCORE_GROUP = "chatcore"  # all six chat tasks
TASK_CHOICES = ("core", "bpb", *CHAT_TASK_NAMES, CHATCORE_GROUP)


@dataclass
class EvalRequest:
    model: str
    tasks: list[str] = field(default_factory=lambda: ["core"])
    eval_bundle: str | None = None
    core_tasks: list[str] | None = None
    max_per_task: int = -1
    batch_size: int = 8
    # bpb
    bpb_data: str = "embedded"
    bpb_split: str = "validation"
    bpb_tokens: int = 20 * 524_288
    sequence_len: int | None = None
    token_bytes_rule: str = "g1"
    # chat
    datasets: dict = field(default_factory=dict)  # chat task key -> local file or Hub id
    max_problems: int | None = None
    allow_code_execution: bool = False
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_k: int = 50
    num_samples: int = 1
    spelling_words_file: str | None = None
    # model
    device: str = "auto"
    dtype: str = "float32"
    autocast: str = "auto"
    trust_remote_code: bool = False
    show_progress: bool = True


def parse_task_list(text: str) -> list[str]:
    tasks = []
    for name in (part.strip().lower() for part in text.split(",")):
        if not name:
            continue
        if name not in TASK_CHOICES:
            raise UserInputError(
                f"--tasks: unknown task {name!r}; expected a comma-separated list of {', '.join(TASK_CHOICES)}"
            )
        for task in CHAT_TASK_NAMES if name == CHATCORE_GROUP else [name]:
            if task not in tasks:
                tasks.append(task)
    if not tasks:
        raise UserInputError("--tasks: no task given")
    return tasks


def load_model_for_eval(location: str, device, dtype, trust_remote_code: bool, check_tokenizer=None):
    """(model, tokenizer): the tokenizer first, checked by `check_tokenizer`, then the model.

    A nanochat-hf folder or Hub id opens through `nanochat_hf.loading` (its format checks and errors); any
    other causal LM (transformers' built-in NanoChat, GPT-2, ...) through `AutoModelForCausalLM`, which is
    enough for CORE and bits per byte.
    """
    location = check_location(location, "MODEL")
    tokenizer = open_tokenizer(location, what="MODEL")
    if check_tokenizer is not None:
        check_tokenizer(tokenizer)
    try:
        model_type = PretrainedConfig.get_config_dict(location)[0].get("model_type")
    except (OSError, ValueError):
        model_type = HF_MODEL_TYPE  # let `open_model` say what is wrong with the folder
    if model_type == HF_MODEL_TYPE:
        model = open_model(location, what="MODEL", dtype=dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise UserInputError(f"MODEL {location}: cannot load a causal language model ({err})") from None
    return model.to(device).eval(), tokenizer


def _device(request: EvalRequest) -> torch.device:
    state = PartialState(cpu=request.device == "cpu" or not torch.cuda.is_available())
    if request.device not in ("auto", "cpu"):
        return torch.device(request.device)
    return state.device


def _autocast_dtype(request: EvalRequest, device: torch.device):
    choice = request.autocast
    if choice == "auto":  # nanochat evaluates under bfloat16 autocast on GPUs, in float32 on CPU
        return torch.bfloat16 if device.type == "cuda" else None
    return None if choice == "none" else getattr(torch, choice)


def run_evaluation(request: EvalRequest) -> dict:
    tasks = request.tasks
    if request.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {request.batch_size}")
    unknown = sorted(set(request.datasets) - set(CHAT_TASK_NAMES))
    if unknown:
        raise UserInputError(f"--dataset: unknown task(s) {unknown}; expected one of {', '.join(CHAT_TASK_NAMES)}")
    bundle = None
    if "core" in tasks:
        if request.eval_bundle is None:
            raise UserInputError("--tasks core needs --eval-bundle (a DCLM bundle folder, zip, Hub id, or 'embedded')")
        bundle = load_bundle(request.eval_bundle, request.core_tasks)
        for task in bundle.tasks:
            task.select(request.max_per_task)  # enough examples for the few-shot draws
    words = None
    if request.spelling_words_file is not None:
        words = read_words_file(request.spelling_words_file)
    chat_tasks = [
        load_chat_task(CHAT_TASK_NAMES[key], request.datasets.get(key), request.max_problems, words)
        for key in tasks
        if key in CHAT_TASK_NAMES
    ]
    sandbox = Sandbox(enabled=request.allow_code_execution)
    if any(task.name == "HumanEval" for task in chat_tasks):
        sandbox.check_enabled()
    text_source = None
    if "bpb" in tasks:
        check_split(request.bpb_split)
        text_source = open_text_source(request.bpb_data)

    device = _device(request)
    dtype = getattr(torch, request.dtype)

    prepared = {}  # what needs the tokenizer but not the model, made before the model is loaded

    def check_tokenizer(tokenizer):
        if chat_tasks:
            check_tokenizer_for_tasks(tokenizer, chat_tasks, where=f"tokenizer of {request.model}")
        if bundle is not None:
            prepared["core"] = prepare_core(bundle, tokenizer, request.max_per_task)
        if text_source is not None:
            prepared["token_bytes"] = find_token_bytes(request.model, tokenizer, request.token_bytes_rule)

    model, tokenizer = load_model_for_eval(request.model, device, dtype, request.trust_remote_code, check_tokenizer)
    results = {"model": request.model}
    autocast_dtype = _autocast_dtype(request, device)
    if bundle is not None:
        core = score_core(
            model,
            prepared["core"],
            bos_token_id(tokenizer),
            batch_size=request.batch_size,
            autocast_dtype=autocast_dtype,
            show_progress=request.show_progress,
        )
        results["core"] = {**core.to_dict(), "bundle": str(request.eval_bundle), "max_per_task": request.max_per_task}
    if "bpb" in tasks:
        sequence_len = request.sequence_len or getattr(model.config, "max_position_embeddings", None)
        if not sequence_len:
            raise UserInputError("--sequence-len is needed: the model's config gives no context length")
        rows = open_bpb_rows(tokenizer, text_source, request.bpb_split, sequence_len)
        results["bpb"] = evaluate_text_bpb(
            model,
            rows,
            prepared["token_bytes"],
            request.bpb_tokens,
            request.batch_size,
            autocast_dtype,
            request.show_progress,
        )
    if chat_tasks:
        chat = evaluate_chat(
            model,
            tokenizer,
            chat_tasks,
            sandbox=sandbox,
            batch_size=request.batch_size,
            autocast_dtype=autocast_dtype,
            show_progress=request.show_progress,
            max_new_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_k=request.top_k,
            num_samples=request.num_samples,
        )
        results["chat"] = chat.to_dict()
    return results
