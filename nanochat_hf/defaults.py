"""nanochat's generation-1 run settings, written once; every module that defaults to one imports it here.

They are the values of nanochat's `scripts/base_train.py` for its released models (d20 ... d32):

- `TOTAL_BATCH_SIZE`: 524,288 = 2**19 tokens per optimizer step, summed over every process and
  micro-step; gradient accumulation follows from it.
- `SEQUENCE_LEN`: 2,048 tokens per training row, the model's context.
- `VOCAB_SIZE`: 65,536 = 2**16 tokens in nanochat's byte-level BPE (256 bytes + merges + 9 special tokens).
- `PARAM_DATA_RATIO`: 20 training tokens per parameter (the Chinchilla ratio), counting *all* parameters,
  embeddings included, so d32 trains on 71,680 steps x 524,288 = 37.6 B tokens.
- `NEWTON_SCHULZ_STEPS`: Muon orthogonalises each update with 5 Newton-Schulz iterations.
- `LORA_TARGET_MODULES`: every Linear inside a block; `c_proj` names both the attention output and the
  MLP output projection. `lm_head` and the embedding are not adapted.

Only the standard library is used here, so the planner can import it without torch.
"""

TOTAL_BATCH_SIZE = 524_288
SEQUENCE_LEN = 2_048
VOCAB_SIZE = 65_536
PARAM_DATA_RATIO = 20
NEWTON_SCHULZ_STEPS = 5
LORA_TARGET_MODULES = ("c_q", "c_k", "c_v", "c_proj", "c_fc")
