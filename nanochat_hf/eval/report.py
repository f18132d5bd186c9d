"""`nanochat-hf report RUN_DIR`: a Markdown report card and training-curve PNGs for a run's checkpoint.

Reads, from the run's final folder (or the newest complete `checkpoint-N`, or RUN_DIR itself when it is a
checkpoint): `trainer_state.json` (the Trainer's log history), `run_settings.json` (pretraining's resolved
settings, when present), `config.json`, and any `eval*.json` written by `nanochat-hf eval --output`.
Writes into that folder `report.md`, `report_loss.png`, `report_val_bpb.png` and `report_mfu.png`, and puts
the report into the folder's model card (README.md) between two markers, so it is part of what
`push_to_hub` uploads; `--push-to-hub REPO` uploads the card, report and plots to an existing model repo.

Sections: model, data, compute, time and cost, final validation bpb and loss, CORE and ChatCORE against
nanochat's published numbers for the same depth (`published.py`), the plots.
"""

import json
from pathlib import Path

import torch

from .. import auto_classes  # noqa: F401 (registers the model with the Auto classes; saved folders get auto_map)
from ..atomic import write_text_atomically
from ..configuration_nanochat_hf import NanoChatHFConfig
from ..errors import UserInputError
from ..folder_manifest import record_rewritten_files
from ..modeling_nanochat_hf import NanoChatHFForCausalLM
from .plots import PLOTTED, plot_training_curves
from .published import GPT2_CORE, NO_NUMBERS_NOTE, PUBLISHED_CHAT, PUBLISHED_CORE
from .scores import CHATCORE_TASKS


REPORT_FILENAME = "report.md"
DCLM_TASKS = 22  # tasks in nanochat's CORE bundle
CARD_BEGIN = "<!-- nanochat-hf report: begin -->"
CARD_END = "<!-- nanochat-hf report: end -->"


# ---------------------------------------------------------------------------------------------------------
# Reading a run


def find_checkpoint_folder(run_dir) -> Path:
    """RUN_DIR itself if it holds trainer_state.json, else RUN_DIR/final, else its newest checkpoint-N that does."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir}: no such folder (expected a training run's output_dir or a checkpoint)")
    for candidate in (run_dir, run_dir / "final"):
        if (candidate / "trainer_state.json").is_file():
            return candidate
    prefix = "checkpoint-"
    checkpoints = sorted(
        (
            p
            for p in run_dir.glob(prefix + "*")
            if (p / "trainer_state.json").is_file() and p.name[len(prefix) :].isdigit()
        ),
        key=lambda p: int(p.name[len(prefix) :]),
    )
    if not checkpoints:
        raise UserInputError(f"{run_dir}: no trainer_state.json here, in final/ or in any checkpoint-N/")
    return checkpoints[-1]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserInputError(f"{path}: cannot read it as JSON ({err})") from None


def read_eval_results(folder: Path) -> dict:
    """The newest `core`, `bpb` and `chat` sections among the folder's eval*.json files."""
    found = {}
    for path in sorted(folder.glob("eval*.json"), key=lambda p: p.stat().st_mtime):
        data = _read_json(path)
        if isinstance(data, dict):
            found.update({key: data[key] for key in ("core", "bpb", "chat") if isinstance(data.get(key), dict)})
    return found


def read_run(run_dir) -> dict:
    folder = find_checkpoint_folder(run_dir)
    state = _read_json(folder / "trainer_state.json")
    settings = {}
    for candidate in (folder / "run_settings.json", Path(run_dir) / "final" / "run_settings.json"):
        if candidate.is_file():
            settings = _read_json(candidate)
            break
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    return {
        "folder": folder,
        "state": state,
        "settings": settings,
        "config": config,
        "evals": read_eval_results(folder),
    }


# ---------------------------------------------------------------------------------------------------------
# Rendering


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(value):
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.4f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _last(log_history: list[dict], key: str):
    values = [entry[key] for entry in log_history if key in entry]
    return values[-1] if values else None


def _mean(log_history: list[dict], key: str):
    values = [entry[key] for entry in log_history if key in entry]
    return sum(values) / len(values) if values else None


def _duration(seconds) -> str:
    if seconds is None:
        return "not logged"
    hours, rest = divmod(float(seconds), 3600)
    if hours:
        return f"{int(hours)} h {rest / 60:.1f} min"
    return f"{rest / 60:.1f} min" if rest >= 60 else f"{rest:.1f} s"


def _parameters(settings: dict, config: dict):
    if settings.get("model", {}).get("parameters"):
        return settings["model"]["parameters"]
    if config.get("model_type") != "nanochat_hf":
        return None
    with torch.device("meta"):  # counted without allocating the weights
        return NanoChatHFForCausalLM(NanoChatHFConfig.from_dict(config)).num_parameters()


def _core_section(depth, evals) -> list[str]:
    lines = ["## CORE", ""]
    core = evals.get("core")
    if core is None:
        lines.append(
            "Not evaluated yet: `nanochat-hf eval FOLDER --tasks core --eval-bundle BUNDLE --output FOLDER/eval_core.json`."
        )
    else:
        rows = [[label, acc, core["centered"][label]] for label, acc in core["accuracy"].items()]
        lines += [_table(["task", "accuracy", "centered"], rows + [["**CORE**", None, core["core_metric"]]]), ""]
        lines.append(
            f"Bundle: `{core.get('bundle', '?')}`, examples per task: {core.get('max_per_task', -1)} (-1 = all)."
        )
        if len(core["accuracy"]) != DCLM_TASKS:
            lines += [
                "",
                f"Only {len(core['accuracy'])} tasks: not comparable with CORE over DCLM's {DCLM_TASKS} tasks below.",
            ]
    references = [[r["name"], r["core"]] for r in PUBLISHED_CORE.get(depth, [])]
    references += [[name, value] for name, value in GPT2_CORE.items()]
    mine = [[f"**this model (d{depth})**", core["core_metric"] if core else None]]
    lines += ["", "Against nanochat's published CORE:", "", _table(["model", "CORE"], mine + references)]
    if depth in NO_NUMBERS_NOTE:
        lines += ["", NO_NUMBERS_NOTE[depth]]
    return lines


def _chat_section(depth, evals) -> list[str]:
    chat = evals.get("chat")
    published = PUBLISHED_CHAT.get(depth, {})
    if chat is None and not published:
        return []
    lines = ["## ChatCORE", ""]
    if chat is None:
        lines += ["Not evaluated yet: `nanochat-hf eval CHAT_FOLDER --tasks chatcore --allow-code-execution`.", ""]
    stages = list(published)
    headers = ["task", "this model", *[f"nanochat d{depth} {stage}" for stage in stages]]
    rows = []
    for task in (*CHATCORE_TASKS, "ChatCORE"):
        if task == "ChatCORE":
            mine = None if chat is None else chat.get("chatcore_metric_5")
            label = "**ChatCORE** (5 tasks)"
        else:
            mine = None if chat is None else chat["accuracy"].get(task)
            label = task
        rows.append([label, mine, *[published[stage].get(task) for stage in stages]])
    if chat is not None and chat.get("chatcore_metric") is not None:
        rows.append(["**ChatCORE** (6 tasks)", chat["chatcore_metric"], *[None] * len(stages)])
    return lines + [_table(headers, rows)]


def render_report(run: dict) -> str:
    folder, state, settings, config, evals = run["folder"], run["state"], run["settings"], run["config"], run["evals"]
    log = state.get("log_history", [])
    model = settings.get("model", {})
    depth = model.get("depth", config.get("n_layer"))
    steps, max_steps = state.get("global_step"), state.get("max_steps")
    tokens_per_step = settings.get("batch", {}).get("tokens_per_step")
    tokens = _last(log, "tokens") or (steps * tokens_per_step if steps and tokens_per_step else None)
    parameters = _parameters(settings, config)
    flops_per_token = model.get("flops_per_token")
    progress = f" (step {steps:,} of {max_steps:,})" if steps is not None and max_steps else ""
    stage = {"mid": "midtrained", "sft": "SFT"}.get(settings.get("stage"), settings.get("stage", "base"))
    lines = [f"# Report card: nanochat d{depth} ({stage})", "", f"Checkpoint: `{folder}`{progress}.", ""]
    lines += [
        "## Model",
        "",
        _table(
            ["", ""],
            [
                [
                    "depth / width / heads",
                    f"{depth} / {config.get('n_embd', model.get('width'))} / {config.get('n_head', model.get('heads'))}",
                ],
                ["parameters", parameters],
                ["vocabulary", config.get("vocab_size", model.get("vocab_size"))],
                ["context (tokens)", model.get("sequence_len", config.get("sequence_len"))],
            ],
        ),
        "",
    ]
    data = settings.get("data", {})
    lines += [
        "## Data",
        "",
        _table(
            ["", ""],
            [
                ["dataset", data.get("dataset") or ", ".join(data.get("dataset_mixture", [])) or None],
                *([["base model", settings["base_model"]]] if settings.get("base_model") else []),
                ["tokenizer", data.get("tokenizer")],
                ["tokens trained", tokens],
                ["tokens per parameter", round(tokens / parameters, 2) if tokens and parameters else None],
            ],
        ),
        "",
    ]
    batch = settings.get("batch", {})
    total_flops = flops_per_token * tokens if flops_per_token and tokens else None
    lines += [
        "## Compute",
        "",
        _table(
            ["", ""],
            [
                ["steps", steps],
                ["tokens per step", tokens_per_step],
                [
                    "processes x micro-batch x accumulation",
                    " x ".join(
                        str(batch.get(k, "?")) for k in ("processes", "micro_batch", "gradient_accumulation_steps")
                    )
                    if batch
                    else None,
                ],
                ["training FLOPs", f"{total_flops:.3e}" if total_flops else None],
                ["mean tokens/s", _mean(log, "tokens_per_second")],
                ["mean MFU (%)", _mean(log, "mfu_percent")],
            ],
        ),
        "",
    ]
    cost_keys = sorted({k for entry in log for k in entry if k.startswith("energy_cost_")})
    lines += [
        "## Time and cost",
        "",
        _table(
            ["", ""],
            [
                ["training time", _duration(_last(log, "train_runtime"))],
                ["energy (kWh)", _last(log, "energy_kwh")],
                *[[f"energy cost ({key.removeprefix('energy_cost_')})", _last(log, key)] for key in cost_keys],
            ],
        ),
        "",
    ]
    bpb = evals.get("bpb")
    lines += [
        "## Final loss and bits per byte",
        "",
        _table(
            ["", ""],
            [
                ["final training loss", _last(log, "loss")],
                ["final validation bpb (training log)", _last(log, "val_bpb")],
                [
                    f"bpb on {bpb['source']} ({bpb['split']}, {bpb['tokens']:,} tokens)"
                    if bpb
                    else "bpb (nanochat-hf eval)",
                    bpb["bpb"] if bpb else None,
                ],
            ],
        ),
        "",
    ]
    lines += _core_section(depth, evals) + [""]
    chat = _chat_section(depth, evals)
    if chat:
        lines += chat + [""]
    lines += ["## Training curves", ""]
    lines += [f"![{title}]({stem}.png)" for stem, title in PLOTTED.values()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Writing, the model card, the Hub


def embed_report(card: str, report: str) -> str:
    """`card` with `report` between the markers (replacing an earlier report; headings one level down)."""
    body = "\n".join(f"#{line}" if line.startswith("#") else line for line in report.strip().splitlines())
    block = f"{CARD_BEGIN}\n{body}\n{CARD_END}"
    if CARD_BEGIN in card and CARD_END in card:
        head, rest = card.split(CARD_BEGIN, 1)
        return head + block + rest.split(CARD_END, 1)[1]
    return card.rstrip("\n") + "\n\n" + block + "\n"


def model_card_report_section(folder) -> str:
    """The report of `folder` ready to append to a freshly written model card ("" when there is none)."""
    path = Path(folder) / REPORT_FILENAME
    return embed_report("", path.read_text(encoding="utf-8")) if path.is_file() else ""


def write_report(run_dir) -> Path:
    """Write report.md and the PNGs into the run's checkpoint folder and embed the report in its README.md."""
    run = read_run(run_dir)
    folder = run["folder"]
    tokens_per_step = run["settings"].get("batch", {}).get("tokens_per_step")
    plot_training_curves(run["state"].get("log_history", []), folder, tokens_per_step)
    report = render_report(run)
    path = write_text_atomically(folder / REPORT_FILENAME, report)
    card_path = folder / "README.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    write_text_atomically(card_path, embed_report(card, report))
    for written in (path, card_path):
        written.chmod(0o644)  # written through a private temporary file
    record_rewritten_files(folder, ["README.md", REPORT_FILENAME, *(stem + ".png" for stem, _ in PLOTTED.values())])
    return path


def push_report(folder, repo_id: str, token: str | None = None) -> None:
    """Upload README.md, report.md and the PNGs of `folder` to the model repository `repo_id`."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    names = ["README.md", REPORT_FILENAME, *(stem + ".png" for stem, _ in PLOTTED.values())]
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names]
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.create_commit(repo_id, operations=operations, commit_message="Report card (nanochat-hf report)")
    except Exception as err:  # offline, no token, no rights: several exception types
        raise UserInputError(f"--push-to-hub {repo_id}: upload failed ({type(err).__name__}: {err})") from None
