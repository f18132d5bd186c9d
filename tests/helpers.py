"""Small builders shared by the tests (real components only, no stand-ins)."""

import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import TrainerCallback


def randomize_(model, seed: int = 0, scale: float = 0.3):
    """Give every parameter random non-zero values.

    nanochat's initialisation zeroes `c_proj` and `lm_head`, which would make parity tests vacuous (every
    model would output uniform logits), so parity tests use fully random weights instead.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return model


def nanochat_reference_logits(state_dict: dict, config, idx: torch.Tensor) -> torch.Tensor:
    """nanochat's generation-1 forward written out from its description (gpt.py at 16788ee): bfloat16
    rotary tables rotating by -theta, rotary before QK-norm, SDPA with GQA, ReLU^2, soft-cap 15 in float32.
    Tensors are used as float32, as nanochat does on CPU."""
    sd = {k.removeprefix("_orig_mod."): v.float() for k, v in state_dict.items()}
    hd, T = config.head_dim, idx.shape[1]
    channels = torch.arange(0, hd, 2, dtype=torch.float32)
    inv_freq = 1.0 / (config.rope_theta ** (channels / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    cos, sin = freqs.cos().bfloat16()[None, :, None, :], freqs.sin().bfloat16()[None, :, None, :]

    def norm(x):
        return F.rms_norm(x, (x.size(-1),))

    def rotary(x):  # x: (B, T, H, hd); nanochat rotates by -theta
        d = x.shape[3] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3).to(x.dtype)

    x = norm(F.embedding(idx, sd["transformer.wte.weight"]))
    B = idx.shape[0]
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        h = norm(x)
        q = (h @ sd[p + "attn.c_q.weight"].T).view(B, T, config.n_head, hd)
        k = (h @ sd[p + "attn.c_k.weight"].T).view(B, T, config.n_kv_head, hd)
        v = (h @ sd[p + "attn.c_v.weight"].T).view(B, T, config.n_kv_head, hd)
        q, k = norm(rotary(q)), norm(rotary(k))
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
        )
        x = x + y.transpose(1, 2).reshape(B, T, -1) @ sd[p + "attn.c_proj.weight"].T
        x = x + F.relu(norm(x) @ sd[p + "mlp.c_fc.weight"].T).square() @ sd[p + "mlp.c_proj.weight"].T
    logits = norm(x) @ sd["lm_head.weight"].T
    return 15 * torch.tanh(logits.float() / 15)


def nanochat_reference_greedy(state_dict: dict, config, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding with the reference forward (no cache: the whole sequence every step)."""
    ids = prompt
    for _ in range(steps):
        next_id = nanochat_reference_logits(state_dict, config, ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids


# Loads a saved folder with `trust_remote_code=True` in a fresh interpreter where `import nanochat_hf` fails,
# as on a machine without this package; prints the model class module, logits and a greedy continuation.
REMOTE_LOAD_SCRIPT = """
import importlib.abc, sys, json
class BlockNanochatHF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "nanochat_hf" or name.startswith("nanochat_hf."):
            raise ImportError("nanochat_hf is not installed on this machine")
sys.meta_path.insert(0, BlockNanochatHF())
try:
    import nanochat_hf  # noqa: F401
    raise SystemExit("the block did not work")
except ImportError:
    pass
import torch
from transformers import AutoModel, AutoModelForCausalLM
folder = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
trunk = AutoModel.from_pretrained(folder, trust_remote_code=True)
ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
with torch.no_grad():
    logits = model(ids).logits
generated = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
print(json.dumps({
    "module": type(model).__module__,
    "trunk": type(trunk).__name__,
    "logits": logits[0, -1, :8].tolist(),
    "generated": generated[0].tolist(),
}))
"""


def write_nanochat_tokenizer_dir(folder, texts, vocab_size: int):
    """Write `tokenizer.pkl` into `folder` as nanochat's RustBPETokenizer saves it: a pickled tiktoken
    `Encoding` named "rustbpe" with the 9 special tokens right after the mergeable ranks. Returns it."""
    import pickle
    from pathlib import Path

    import tiktoken

    from nanochat_hf.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, mergeable_ranks_from_tokenizer, train_tokenizer

    trained = train_tokenizer(texts, vocab_size=vocab_size, max_chars=300_000, show_progress=False)
    ranks = mergeable_ranks_from_tokenizer(trained)
    encoding = tiktoken.Encoding(
        name="rustbpe",
        pat_str=SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={token: len(ranks) + i for i, token in enumerate(SPECIAL_TOKENS)},
    )
    with open(Path(folder) / "tokenizer.pkl", "wb") as f:
        pickle.dump(encoding, f)
    return encoding


# ---------------------------------------------------------------------------------------------------------
# Tiny CPU recipe runs

# A tiny pretraining run: depth 2 (width 128), rows of 32 tokens, 1,024 tokens per step (2 x 16 rows).
TINY_PRETRAIN_SETTINGS = {
    "depth": 2,
    "sequence_len": 32,
    "dataset": "embedded",
    "total_batch_size": 1024,
    "max_steps": 6,
    "eval_every": 0,
    "sample_every": 0,
    "per_device_train_batch_size": 16,
    "use_cpu": True,
    "bf16": False,
    "logging_steps": 1,
    "save_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
    "seed": 0,
}


def to_argv(settings: dict) -> list[str]:
    """`--key value` arguments as the recipes take them (a list value becomes several values)."""
    argv = []
    for key, value in settings.items():
        argv += [f"--{key}", *(value if isinstance(value, list) else [str(value)])]
    return argv


def tiny_pretrain_argv(output_dir, tokenizer_dir, **overrides) -> list[str]:
    settings = {**TINY_PRETRAIN_SETTINGS, "tokenizer_name_or_path": str(tokenizer_dir), "output_dir": str(output_dir)}
    return to_argv({**settings, **overrides})


def write_tiny_tokenizer(folder, vocab_size: int = 512):
    """A small nanochat tokenizer trained on the embedded corpus, saved with its token_bytes.pt."""
    from nanochat_hf.data.sources import open_text_source
    from nanochat_hf.tokenizer import compute_token_bytes, train_tokenizer
    from nanochat_hf.tokenizer.folder import save_tokenizer_folder

    texts = open_text_source("embedded").iter_documents("train")
    tokenizer = train_tokenizer(
        texts, vocab_size=vocab_size, max_chars=1_000_000, model_max_length=64, show_progress=False
    )
    return save_tokenizer_folder(tokenizer, folder, token_bytes=compute_token_bytes(tokenizer))


class KillAtStep(TrainerCallback):
    """Stops the run like a kill, just before step `step + 1` begins."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed before step {self.step + 1}")


def intercept_hub_uploads(monkeypatch) -> dict:
    """Let the real Hub upload code run, stopping it only where it would reach the network.

    Returns the dict that receives each committed file: path in the repository -> its bytes.
    """
    from pathlib import Path

    import huggingface_hub

    uploaded = {}

    def fake_create_repo(self, repo_id, **kwargs):
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def fake_create_commit(self, repo_id, operations, **kwargs):
        for op in operations:
            source = op.path_or_fileobj
            uploaded[op.path_in_repo] = Path(source).read_bytes() if isinstance(source, str) else source
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/0",
            commit_message="",
            commit_description="",
            oid="0" * 40,
            pr_url=None,
        )

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", fake_create_commit)
    return uploaded


REPO = Path(__file__).resolve().parents[1]


def launch_pretraining_on_two_processes(argv, timeout: int = 900) -> subprocess.CompletedProcess:
    """`accelerate launch` of recipes/pretrain.py with 2 CPU processes (gloo); fails the test if the run fails."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_configs" / "cpu_2proc.yaml"),
        str(REPO / "recipes" / "pretrain.py"),
        *argv,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    return result
