"""Per-token byte lengths, the denominator of bits-per-byte.

bpb = sum of CE (nats) / (ln 2 * sum of token_bytes[target]) over valid targets; special tokens count 0
bytes and are left out of both sums. nanochat saves the table as `token_bytes.pt`, an int32 tensor of
shape [vocab_size]; we write the same file next to `tokenizer.json`.

Two rules exist, and they differ only for tokens that are not valid UTF-8 on their own (a lone
continuation byte, half of an emoji, ...):

- "g1" (nanochat 2025, the released d32): the UTF-8 length of the token decoded *as a Python string*
  with replacement, so each U+FFFD counts 3 bytes (a lone byte 0x80 counts 3, not 1). Use it to
  reproduce G1 bpb numbers exactly.
- "raw" (nanochat 2026): the token's raw byte length.
"""

from pathlib import Path

from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer.bpe import token_raw_bytes


TOKEN_BYTES_FILENAME = "token_bytes.pt"
TOKEN_BYTES_RULES = ("g1", "raw")


def byte_length(token: bytes, rule: str = "g1") -> int:
    if rule == "g1":
        return len(token.decode("utf-8", errors="replace").encode("utf-8"))
    if rule == "raw":
        return len(token)
    raise UserInputError(f"token bytes rule must be one of {TOKEN_BYTES_RULES}, got {rule!r}")


def compute_token_bytes(tokenizer, rule: str = "g1"):
    """int32 tensor [len(tokenizer)]: byte length of each token under `rule`, 0 for special/added tokens."""
    import torch

    if rule not in TOKEN_BYTES_RULES:
        raise UserInputError(f"token bytes rule must be one of {TOKEN_BYTES_RULES}, got {rule!r}")
    lengths = [0 if token is None else byte_length(token, rule) for token in token_raw_bytes(tokenizer)]
    return torch.tensor(lengths, dtype=torch.int32)


def save_token_bytes(token_bytes, folder) -> Path:
    import torch

    path = Path(folder) / TOKEN_BYTES_FILENAME
    torch.save(torch.as_tensor(token_bytes, dtype=torch.int32).clone(), path)
    return path


def load_token_bytes(path, vocab_size: int | None = None):
    """Load `token_bytes.pt` (a folder holding it, or the file), checking it is a 1-D table of lengths."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / TOKEN_BYTES_FILENAME
    if not path.is_file():
        raise UserInputError(f"{path}: no such file (expected nanochat's per-token byte lengths)")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no pickled code
    except Exception as err:
        raise UserInputError(f"{path}: not a saved tensor ({err})") from err
    if not isinstance(table, torch.Tensor) or table.ndim != 1 or table.is_floating_point():
        raise UserInputError(f"{path}: expected a 1-D integer tensor of per-token byte lengths")
    if vocab_size is not None and table.numel() != vocab_size:
        raise UserInputError(f"{path}: has {table.numel()} entries but the tokenizer has {vocab_size} tokens")
    if bool((table < 0).any()):
        raise UserInputError(f"{path}: byte lengths must be >= 0")
    return table.to(torch.int32)
