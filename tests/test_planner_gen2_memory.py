"""Generation 2's memory modes in the byte model, against real tensors on the CPU.

- `full`: a real tiny generation-2 model with the mode's knobs applied as the run applies them
  (`apply_model_knobs`: wte to bf16), gradients from a real backward pass under bf16 autocast, and
  `NanoChatGen2MuonAdamW` after one step (momentum + NorMuon's factored second moment per matrix, AdamW
  moments for lm_head, wte, value embeddings and scalars): parameter, gradient, state and autocast-cast
  bytes equal the plan's.
- `24gb` / `12gb` (`embedding_location: cpu_rows`): the GPU part is the same real model and optimizer
  without wte and the value embeddings; the CPU part (fp32 weight, gradient sum, AdamW moments of those
  tables) and the rows a micro-step gathers are built as tensors from the model's own tables and a batch
  of token ids, and must equal the plan.
"""

import dataclasses

import pytest
import torch
from torch import nn

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim.param_groups_gen2 import build_gen2_optimizer
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.gpus import get_gpu
from nanochat_hf.planning.memory import plan_memory, static_memory
from nanochat_hf.planning.memory_modes import GENERATION2_MODE_ORDER, knobs_for_mode
from nanochat_hf.planning.plan import make_plan
from nanochat_hf.training.memory import apply_model_knobs


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

# A padded vocabulary (100 -> 128 rows), GQA (value embeddings narrower than wte), both NorMuon shapes
# (rows >= cols: c_q, c_fc; rows < cols: c_proj, the value gates) and an odd depth.
TINY_GEN2 = [
    dict(n_layer=3, n_embd=128, n_head=2, n_kv_head=2, vocab_size=100, sequence_len=16),
    dict(n_layer=4, n_embd=128, n_head=2, n_kv_head=1, vocab_size=300, sequence_len=32),
]
TABLES = ("transformer.wte.weight", "transformer.value_embeds.")


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def is_table(name: str) -> bool:
    return name.startswith(TABLES)


def trained_once(config: NanoChatHFConfig, knobs):
    """The model as the run holds it in `knobs`, after one backward pass and one optimizer step."""
    torch.manual_seed(0)
    model = NanoChatHFForCausalLM(config)
    apply_model_knobs(model, knobs)
    ids = torch.randint(0, config.vocab_size, (1, config.sequence_len), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, labels=ids).loss.backward()
    optimizer = build_gen2_optimizer(model)
    optimizer.step()
    return model, optimizer


def linear_cast_copies(model) -> list[torch.Tensor]:
    """The bf16 casts eager autocast caches: one per fp32 weight that meets a matmul (every nn.Linear)."""
    return [
        m.weight.detach().to(torch.bfloat16)
        for m in model.modules()
        if isinstance(m, nn.Linear) and m.weight.dtype == torch.float32
    ]


def gpu_side(model, optimizer, keep) -> dict[str, int]:
    params = [p for name, p in model.named_parameters() if keep(name)]
    state = [t for p in params for t in optimizer.state.get(p, {}).values() if torch.is_tensor(t)]
    return {
        "gpu_weights": tensor_bytes(params),
        "gpu_gradients": tensor_bytes(p.grad for p in params),
        "gpu_optimizer_state": tensor_bytes(state),
        "gpu_weight_cast_copies": tensor_bytes(linear_cast_copies(model)),
    }


@pytest.mark.parametrize("config_kwargs", TINY_GEN2, ids=lambda c: f"L{c['n_layer']}-kv{c['n_kv_head']}")
def test_full_mode_is_exact_to_the_byte(config_kwargs):
    config = NanoChatHFConfig(generation=2, **config_kwargs)
    knobs = knobs_for_mode("full", 2)
    model, optimizer = trained_once(config, knobs)
    # What the run really does in `full`: wte bf16, value embeddings and everything else fp32.
    assert model.transformer.wte.weight.dtype == torch.bfloat16
    assert all(ve.weight.dtype == torch.float32 for ve in model.transformer.value_embeds.values())
    second_moments = [s["second_momentum_buffer"] for s in optimizer.state.values() if "second_momentum_buffer" in s]
    assert {tuple(t.shape) for t in second_moments} >= {(128, 1), (1, 512)}  # both NorMuon layouts occur
    measured = {
        **gpu_side(model, optimizer, lambda name: True),
        "cpu_master_weights": 0,
        "cpu_gradients": 0,
        "cpu_optimizer_state": 0,
        "cpu_pinned_staging": 0,
    }
    assert dataclasses.asdict(static_memory(ModelShape.from_config(config), knobs)) == measured


def gathered_rows(model, ids: torch.Tensor, dtype: torch.dtype) -> tuple[list[torch.Tensor], int]:
    """Each table's rows for the distinct ids of a micro-batch, in `dtype`, and how many ids that is."""
    unique = torch.unique(ids)
    tables = [p for name, p in model.named_parameters() if is_table(name)]
    return [table.detach()[unique].to(dtype) for table in tables], unique.numel()


@pytest.mark.parametrize("config_kwargs", TINY_GEN2, ids=lambda c: f"L{c['n_layer']}-kv{c['n_kv_head']}")
@pytest.mark.parametrize("mode", ["24gb", "12gb"])
def test_cpu_rows_modes_are_exact_to_the_byte(config_kwargs, mode):
    config = NanoChatHFConfig(generation=2, **config_kwargs)
    shape = ModelShape.from_config(config)
    knobs = knobs_for_mode(mode, 2)
    model, optimizer = trained_once(config, knobs)
    tables = [p for name, p in model.named_parameters() if is_table(name)]
    assert len(tables) == 1 + len(config.value_embedding_layers)
    # CPU RAM: per table an fp32 weight, an fp32 gradient sum and AdamW's fp32 exp_avg and exp_avg_sq.
    fp32 = [torch.zeros_like(t, dtype=torch.float32) for t in tables for _ in range(4)]
    # Micro-batch 1 uses T < vocab distinct ids at most; micro-batch 16 can use every id of the vocabulary.
    for micro_batch in (1, 16):
        tokens = micro_batch * config.sequence_len
        ids = (torch.randperm(tokens) % config.vocab_size).view(micro_batch, -1)  # as many distinct ids as possible
        rows, distinct = gathered_rows(model, ids, torch.bfloat16)
        assert distinct == min(config.vocab_size, tokens)
        row_grads = [torch.zeros_like(r) for r in rows]  # on the GPU, in the rows' dtype
        staged = rows + [torch.zeros_like(r, dtype=torch.float32) for r in rows]  # pinned: rows out, fp32 grads in
        measured = {
            **gpu_side(model, optimizer, lambda name: not is_table(name)),
            "cpu_master_weights": tensor_bytes(fp32[0::4]),
            "cpu_gradients": tensor_bytes(fp32[1::4]),
            "cpu_optimizer_state": tensor_bytes(fp32[2::4] + fp32[3::4]),
            "cpu_pinned_staging": tensor_bytes(staged),
        }
        assert dataclasses.asdict(static_memory(shape, knobs, micro_batch)) == measured
        plan = plan_memory(shape, get_gpu("rtx4070"), mode, dataclasses.replace(knobs, micro_batch=micro_batch))
        assert plan.embedding_rows == tensor_bytes(rows) + tensor_bytes(row_grads)
        assert plan.total == (
            plan.static.gpu_total
            + plan.activations_eager
            + plan.logits
            + plan.embedding_rows
            + plan.cuda_context
            + plan.margin
        )


def test_generation_knobs_that_cannot_train_are_refused():
    gen2 = ModelShape.from_depth(4, generation=2)
    with pytest.raises(UserInputError, match="8-bit optimizer state"):
        make_plan(4, "rtx4070", generation=2, memory_mode="full", knob_overrides={"muon_momentum": "8bit"})
    with pytest.raises(UserInputError, match="not available for generation 2"):
        make_plan(4, "rtx4070", generation=2, memory_mode="8gb")
    with pytest.raises(UserInputError, match="cpu_rows` is generation 2's"):
        make_plan(4, "rtx4070", memory_mode="full", knob_overrides={"embedding_location": "cpu_rows"})
    # A generation-2 auto plan with an 8-bit override leaves every mode out: the error is the answer.
    with pytest.raises(UserInputError, match="8-bit optimizer state"):
        make_plan(4, "rtx4070", generation=2, knob_overrides={"adamw_state": "8bit"})
    assert plan_memory(gen2, get_gpu("rtx4070"), "full", knobs_for_mode("full", 2)).fits


def test_cpu_rows_time_adds_the_row_traffic_per_micro_step_and_the_cpu_adamw_per_update():
    """Same knobs but the tables' location: the GPU work is equal, the difference is the rows' PCIe and host
    traffic per micro-step (growing with the micro-batch until every id is used) and the CPU AdamW."""
    on_gpu = knobs_for_mode("full", 2, micro_batch=1)
    times = {}
    for location in ("gpu", "cpu_rows"):
        for micro_batch in (1, 16, 32):
            knobs = dataclasses.replace(on_gpu, embedding_location=location, micro_batch=micro_batch)
            overrides = {"embedding_location": location, "micro_batch": micro_batch}
            plan = make_plan(
                24, "h100-sxm", generation=2, target_param_data_ratio=8, memory_mode="full", knob_overrides=overrides
            )
            assert plan.memory.knobs == knobs
            times[location, micro_batch] = plan.chosen_time
    extra = {mb: times["cpu_rows", mb].micro_step_seconds - times["gpu", mb].micro_step_seconds for mb in (1, 16, 32)}
    assert 0 < extra[1] < extra[16]
    # 16 x 2048 = 32,768 tokens = the vocabulary: from there on the rows per micro-step stop growing.
    assert extra[32] == pytest.approx(extra[16])
    assert extra[16] == pytest.approx(16 * extra[1])
    update = times["cpu_rows", 1].optimizer_step_seconds - times["gpu", 1].optimizer_step_seconds
    assert update > 0.1  # 654 M table parameters' AdamW on the CPU


@pytest.mark.parametrize("mode", GENERATION2_MODE_ORDER)
def test_every_generation2_mode_plans_d24_with_its_own_knobs(mode):
    plan = make_plan(24, "h200-sxm", generation=2, target_param_data_ratio=8, memory_mode=mode)
    assert plan.memory.mode == mode and plan.memory.knobs == knobs_for_mode(mode, 2, micro_batch=None)
    assert plan.fits
    assert (plan.memory.embedding_rows > 0) == (mode != "full")
    assert (plan.memory.static.cpu_total > 0) == (mode != "full")
