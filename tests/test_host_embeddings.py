"""Generation 2's wte and value embeddings kept in CPU RAM, rows gathered per micro-batch (`embedding_location:
cpu_rows`, memory modes 24gb / 12gb): the same numbers as the model with its tables in place, and the run."""

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_pretrain_argv
from transformers import TrainerCallback

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim.host_embeddings import HostEmbedding, host_embeddings, place_embeddings_on_host
from nanochat_hf.optim.setup_gen2 import build_gen2_training
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining


def tiny_gen2(seed=0, **overrides):
    torch.manual_seed(seed)
    settings = dict(generation=2, n_layer=4, n_embd=64, n_head=2, n_kv_head=2, vocab_size=320, sequence_len=32)
    return NanoChatHFForCausalLM(NanoChatHFConfig(**{**settings, **overrides}))


def batch(seed, rows=2, length=24, vocab=300):
    generator = torch.Generator().manual_seed(seed)
    # Few distinct ids, so the gathered rows are far fewer than the vocabulary and repeats are summed.
    return torch.randint(0, 40, (rows, length), generator=generator) * (vocab // 40)


def placed_pair(embedding_dtype=torch.float32):
    plain = tiny_gen2()
    placed = copy.deepcopy(plain)
    placement = place_embeddings_on_host(placed, embedding_dtype)
    return plain, placed, placement


def test_placement_replaces_wte_and_every_value_table_and_keeps_the_state_dict_keys():
    plain, placed, placement = placed_pair(torch.bfloat16)
    n_value_tables = len(plain.transformer.value_embeds)
    assert n_value_tables == 2 and set(placement.tables) == {"transformer.wte"} | {
        f"transformer.value_embeds.{key}" for key in plain.transformer.value_embeds
    }
    assert placement.num_params == 320 * 64 * (1 + n_value_tables)
    assert list(placed.state_dict()) != [] and set(placed.state_dict()) == set(plain.state_dict())
    for name, tensor in placed.state_dict().items():
        torch.testing.assert_close(tensor, plain.state_dict()[name], rtol=0, atol=0)
    assert placed.get_input_embeddings() is placed.transformer.wte
    assert "wte and 2 value-embedding tables" in placement.describe()
    # The model's first parameter (its .device / .dtype) is one that moves with the model, not a host table.
    assert not isinstance(
        dict(placed.named_modules())[next(iter(placed.state_dict())).rsplit(".", 1)[0]], HostEmbedding
    )
    # Placing again changes only the gathered dtype.
    again = place_embeddings_on_host(placed, torch.float32)
    assert again.tables == placement.tables and placed.transformer.wte.embedding_dtype == torch.float32


def test_casting_the_model_keeps_the_host_tables_fp32_and_sets_the_gathered_dtype():
    _, placed, _ = placed_pair(torch.float32)
    placed.to(torch.bfloat16)
    for table in host_embeddings(placed).values():
        assert table.weight.dtype == torch.float32 and table.weight.device.type == "cpu"
        assert table.embedding_dtype == torch.bfloat16
    assert placed.lm_head.weight.dtype == torch.bfloat16
    placed.float()
    assert placed.transformer.wte.embedding_dtype == torch.float32


def test_forward_and_accumulated_gradients_equal_the_model_with_its_tables_in_place():
    plain, placed, placement = placed_pair(torch.float32)
    row_index = placed.transformer.wte.row_index
    for micro_step in range(2):  # two micro-steps: the host gradient is an fp32 sum over both
        input_ids = batch(micro_step)
        expected = plain(input_ids=input_ids, labels=input_ids)
        got = placed(input_ids=input_ids, labels=input_ids)
        torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=0)
        (expected.loss / 2).backward()
        (got.loss / 2).backward()
        assert placed.transformer.wte.gathered_rows == input_ids.unique().numel() < 320
        assert row_index.computed == micro_step + 1  # one torch.unique per forward, shared by all tables
    plain_params = dict(plain.named_parameters())
    for name, param in placed.named_parameters():
        assert param.grad is not None, name
        torch.testing.assert_close(param.grad, plain_params[name].grad, rtol=1e-5, atol=1e-7, msg=name)
    # Rows no token used have an exactly zero gradient (the table's gradient is a dense fp32 sum).
    used = torch.cat([batch(0), batch(1)]).unique()
    unused = torch.ones(320, dtype=torch.bool)
    unused[used] = False
    assert placement.tables["transformer.wte"].weight.grad[unused].abs().max() == 0
    placed.zero_grad(set_to_none=True)
    assert all(table.weight.grad is None for table in placement.tables.values())


def test_the_generation2_optimizer_trains_the_host_tables_as_it_trains_the_model_in_place():
    plain, placed, _ = placed_pair(torch.float32)
    settings = dict(num_iterations=6, total_batch_size=64, reference_depth=4)
    optimizers = [build_gen2_training(model, settings).optimizer for model in (plain, placed)]
    for step in range(3):
        for model, optimizer in zip((plain, placed), optimizers, strict=True):
            input_ids = batch(10 + step)
            model(input_ids=input_ids, labels=input_ids).loss.backward()
            optimizer.step()
            model.zero_grad(set_to_none=True)
    plain_params = dict(plain.named_parameters())
    for name, param in placed.named_parameters():
        torch.testing.assert_close(param, plain_params[name], rtol=1e-4, atol=1e-6, msg=name)
    wte = placed.transformer.wte.weight
    state = optimizers[1].state[wte]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg"].device.type == "cpu"
    assert not torch.equal(wte, tiny_gen2().transformer.wte.weight)  # it trained


def test_bf16_rows_are_the_fp32_rows_rounded_once():
    _, placed, _ = placed_pair(torch.bfloat16)
    input_ids = batch(3)
    got = placed.transformer.wte(input_ids)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, placed.transformer.wte.weight[input_ids].to(torch.bfloat16), rtol=0, atol=0)


def test_saved_placed_model_loads_as_a_plain_model(tmp_path):
    _, placed, _ = placed_pair(torch.float32)
    placed.save_pretrained(tmp_path / "saved")
    reloaded = NanoChatHFForCausalLM.from_pretrained(tmp_path / "saved")
    assert isinstance(reloaded.transformer.wte, torch.nn.Embedding)
    input_ids = batch(5)
    torch.testing.assert_close(reloaded(input_ids=input_ids).logits, placed(input_ids=input_ids).logits)


def test_plain_embeddings_only():
    model = tiny_gen2()
    table = torch.nn.Embedding(10, 4, padding_idx=0)
    with pytest.raises(ValueError, match="padding_idx"):
        HostEmbedding.from_embedding(table, placed_pair()[2].tables["transformer.wte"].row_index, torch.float32)
    with pytest.raises(ValueError, match="not a nanochat model"):
        place_embeddings_on_host(torch.nn.Linear(2, 2))
    assert host_embeddings(model) == {}


# ---- the pretraining run


def losses(output_dir) -> list[float]:
    history = json.loads((Path(output_dir) / "final" / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def gen2_run_argv(output_dir, tokenizer_dir, **overrides):
    gen2 = dict(generation=2, lr_warmup_steps=2, matrix_lr=0.16, embedding_lr=2.4, unembedding_lr=0.064)
    return tiny_pretrain_argv(output_dir, tokenizer_dir, **{**gen2, "max_steps": 6, "logging_steps": 1, **overrides})


class HostTables(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.tables = host_embeddings(model)
        self.optimizer_holds_them = all(
            any(table.weight is p for group in optimizer.param_groups for p in group["params"])
            for table in self.tables.values()
        )


def test_a_cpu_rows_run_trains_as_the_full_mode_run(tmp_path, tokenizer_dir):
    runs, tables = {}, {}
    for mode in ("full", "12gb"):
        args, training_args = parse_pretrain_arguments(gen2_run_argv(tmp_path / mode, tokenizer_dir, memory_mode=mode))
        inspect = HostTables()
        run_pretraining(args, training_args, extra_callbacks=[inspect])
        tables[mode] = inspect.tables
        assert inspect.optimizer_holds_them
        runs[mode] = losses(tmp_path / mode)
        settings = json.loads((tmp_path / mode / "final" / "run_settings.json").read_text())
        assert settings["memory"]["mode"] == mode
    assert tables["full"] == {} and len(tables["12gb"]) == 2  # wte and the depth-2 model's one value table
    assert len(runs["full"]) == 6 and runs["full"][-1] < runs["full"][0]
    assert runs["12gb"] == pytest.approx(runs["full"], rel=1e-4)
    saved = NanoChatHFForCausalLM.from_pretrained(tmp_path / "12gb" / "final")
    assert isinstance(saved.transformer.wte, torch.nn.Embedding)


def test_cpu_rows_is_refused_for_generation_1_and_for_several_processes(tmp_path, tokenizer_dir):
    argv = tiny_pretrain_argv(tmp_path / "gen1", tokenizer_dir, max_steps=2, embedding_location="cpu_rows")
    args, training_args = parse_pretrain_arguments(argv)
    with pytest.raises(UserInputError, match="embedding_location: cpu_rows.*generation 1"):
        run_pretraining(args, training_args)
    assert not (tmp_path / "gen1" / "final").exists()


@pytest.mark.gpu
def test_on_cuda_the_rows_and_gradients_match_the_tables_in_place_under_bf16_autocast():
    plain, placed, placement = placed_pair(torch.bfloat16)
    plain.transformer.wte.to(torch.bfloat16)
    for table in plain.transformer.value_embeds.values():
        table.to(torch.bfloat16)
    plain, placed = plain.to("cuda"), placed.to("cuda")
    assert placement.tables["transformer.wte"].weight.device.type == "cpu" and placed.device.type == "cuda"
    for micro_step in range(3):  # the pinned staging buffers are reused across micro-steps
        input_ids = batch(micro_step).to("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            expected = plain(input_ids=input_ids, labels=input_ids)
            got = placed(input_ids=input_ids, labels=input_ids)
        torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=0)
        expected.loss.backward()
        got.loss.backward()
    plain_grad = plain.transformer.wte.weight.grad.float().cpu()
    # The plain bf16 table sums its micro-steps in bf16; the host table sums them in fp32.
    torch.testing.assert_close(placement.tables["transformer.wte"].weight.grad, plain_grad, rtol=2e-2, atol=1e-4)
