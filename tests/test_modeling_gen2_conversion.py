"""Generation-2 conversion: nanochat checkpoint -> hf -> nanochat, `--to native` refused, bad input refused."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import REMOTE_LOAD_SCRIPT
from nanochat_gen2_reference import TOP_LEVEL_STEMS, nanochat_gpt, randomize_gen2_, to_hf_state_dict
from safetensors.torch import load_file

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.cli import main as cli_main
from nanochat_hf.conversion import convert, detect_format


SHAPE = dict(sequence_len=256, vocab_size=200, n_layer=3, n_embd=64, n_head=4, n_kv_head=2, window_pattern="SL")


def to_nanochat_names(state_dict):
    return {
        (
            key.removeprefix("transformer.")
            if key.removeprefix("transformer.").split(".")[0] in TOP_LEVEL_STEMS
            else key
        ): v
        for key, v in state_dict.items()
    }


def write_gen2_folder(folder, step=7, seed=0, mutate=None):
    """A generation-2 checkpoint as nanochat 2026 writes it on CUDA: wte and value embeddings in bfloat16, the
    rest float32, `_orig_mod.` keys from a compiled module, `window_pattern` in the meta, 200 -> 256 rows."""
    folder.mkdir(parents=True, exist_ok=True)
    model = randomize_gen2_(NanoChatHFForCausalLM(NanoChatHFConfig(generation=2, **SHAPE)), seed=seed)
    state_dict = {}
    for key, tensor in to_nanochat_names(model.state_dict()).items():
        tensor = tensor.clone()
        if key == "transformer.wte.weight" or key.startswith("value_embeds."):
            tensor = tensor.bfloat16()
        state_dict[f"_orig_mod.{key}"] = tensor
    meta = {"step": step, "model_config": dict(SHAPE)}
    if mutate:
        mutate(state_dict, meta)
    torch.save(state_dict, folder / f"model_{step:06d}.pt")
    (folder / f"meta_{step:06d}.json").write_text(json.dumps(meta, indent=2))
    return {key.removeprefix("_orig_mod."): tensor for key, tensor in state_dict.items()}


def test_nanochat_gen2_checkpoint_converts_to_hf_exactly(tmp_path):
    written = write_gen2_folder(tmp_path / "ckpt")
    assert detect_format(tmp_path / "ckpt") == "nanochat"
    assert cli_main(["convert", str(tmp_path / "ckpt"), str(tmp_path / "hf")]) == 0
    config = NanoChatHFConfig.from_pretrained(tmp_path / "hf")
    assert (config.generation, config.window_pattern, config.padded_vocab_size) == (2, "SL", 256)
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    assert weights.keys() == to_hf_state_dict(written).keys()
    for key, tensor in to_hf_state_dict(written).items():
        assert weights[key].dtype == torch.float32  # default dtype: the source lm_head's; bfloat16 -> float32 is exact
        assert torch.equal(weights[key], tensor.float()), key


def test_hf_to_nanochat_to_hf_is_bit_identical(tmp_path):
    model = randomize_gen2_(NanoChatHFForCausalLM(NanoChatHFConfig(generation=2, **SHAPE)), seed=1)
    model.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "nc", to_format="nanochat", step=42)
    assert sorted(os.listdir(tmp_path / "nc")) == ["meta_000042.json", "model_000042.pt"]
    meta = json.loads((tmp_path / "nc" / "meta_000042.json").read_text())
    assert meta["model_config"] == SHAPE
    saved = torch.load(tmp_path / "nc" / "model_000042.pt", weights_only=True)
    assert list(saved)[:4] == ["resid_lambdas", "x0_lambdas", "smear_lambda", "backout_lambda"]
    assert "value_embeds.2.weight" in saved and "transformer.h.2.attn.ve_gate.weight" in saved
    convert(tmp_path / "nc", tmp_path / "hf2")
    before, after = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "hf2" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    round_trip = NanoChatHFConfig.from_pretrained(tmp_path / "hf2")
    assert round_trip.to_diff_dict() == NanoChatHFConfig.from_pretrained(tmp_path / "hf").to_diff_dict()


def test_written_checkpoint_loads_in_nanochat_and_computes_the_same_logits(tmp_path):
    gpt = nanochat_gpt()
    if gpt is None:
        pytest.skip("nanochat's source (the local mirror) is not available")
    model = randomize_gen2_(NanoChatHFForCausalLM(NanoChatHFConfig(generation=2, **SHAPE)), seed=2).eval()
    model.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "nc", to_format="nanochat")
    meta = json.loads((tmp_path / "nc" / "meta_000000.json").read_text())
    reference = gpt.GPT(gpt.GPTConfig(**meta["model_config"]))
    reference.load_state_dict(torch.load(tmp_path / "nc" / "model_000000.pt", weights_only=True), strict=True)
    ids = torch.randint(0, 200, (2, 160), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference.eval()(ids), atol=1e-4, rtol=0)


def test_converted_gen2_folder_loads_with_remote_code_where_the_package_is_absent(tmp_path):
    write_gen2_folder(tmp_path / "ckpt", seed=3)
    convert(tmp_path / "ckpt", tmp_path / "hf")
    model = NanoChatHFForCausalLM.from_pretrained(tmp_path / "hf").eval()
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD_SCRIPT, str(tmp_path / "hf")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.")
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        expected = model(ids).logits[0, -1, :8]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, atol=1e-5, rtol=0)
    assert loaded["generated"] == model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)[0].tolist()


def test_to_native_refuses_generation2_with_the_reason(tmp_path, capsys):
    write_gen2_folder(tmp_path / "ckpt")
    assert cli_main(["convert", str(tmp_path / "ckpt"), str(tmp_path / "native"), "--to", "native"]) == 2
    err = capsys.readouterr().err
    assert "generation-2" in err and "cannot represent it" in err and "--to hf" in err
    assert not (tmp_path / "native").exists()
    convert(tmp_path / "ckpt", tmp_path / "hf")
    assert cli_main(["convert", str(tmp_path / "hf"), str(tmp_path / "native"), "--to", "native"]) == 2
    assert "cannot represent it" in capsys.readouterr().err


def drop(key):
    return lambda sd, meta: sd.pop(f"_orig_mod.{key}")


def meta_says(field, value):
    return lambda sd, meta: meta["model_config"].__setitem__(field, value)


def unpadded_tables(sd, meta):
    for key in list(sd):
        if key.endswith(("wte.weight", "lm_head.weight")) or ".value_embeds." in key or "_mod.value_embeds" in key:
            sd[key] = sd[key][:200].clone()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            drop("value_embeds.2.weight"),
            "a generation-2 (2026) checkpoint, but missing key(s) ['value_embeds.2.weight']",
        ),
        (drop("transformer.h.0.attn.ve_gate.weight"), "missing key(s) ['transformer.h.0.attn.ve_gate.weight']"),
        (lambda sd, meta: sd.__setitem__("_orig_mod.extra", torch.zeros(1)), "unexpected key(s) ['extra']"),
        (
            meta_says("window_pattern", "SSXL"),
            "window_pattern 'SSXL' must be a non-empty string of the letters S and L",
        ),
        (unpadded_tables, "transformer.wte.weight has shape (200, 64), but the model config implies (256, 64)"),
        (meta_says("vocab_size", 300), "vocab_size=300 padded to a multiple of 64 = 320 rows"),
    ],
)
def test_bad_generation2_checkpoints_fail_clearly_and_write_nothing(tmp_path, capsys, mutate, expected):
    write_gen2_folder(tmp_path / "ckpt", mutate=mutate)
    assert cli_main(["convert", str(tmp_path / "ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no output, no temporary folder


def test_gen2_meta_without_its_tensors_is_refused(tmp_path, capsys):
    # A generation-1 state dict under a meta that says window_pattern: the new tensors are missing.
    gen1 = NanoChatHFForCausalLM(NanoChatHFConfig(**{k: v for k, v in SHAPE.items() if k != "window_pattern"}))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save(gen1.state_dict(), folder / "model_000001.pt")
    (folder / "meta_000001.json").write_text(json.dumps({"model_config": SHAPE}))
    assert cli_main(["convert", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "a generation-2 (2026) checkpoint, but missing key(s) ['resid_lambdas', 'x0_lambdas'" in err, err
    assert not (tmp_path / "out").exists()


def test_to_nanochat_refuses_a_model_nanochat_cannot_build(tmp_path, capsys):
    odd = NanoChatHFConfig(generation=2, qk_scale=1.0, **SHAPE)
    NanoChatHFForCausalLM(odd).save_pretrained(tmp_path / "hf")
    assert cli_main(["convert", str(tmp_path / "hf"), str(tmp_path / "nc"), "--to", "nanochat"]) == 2
    assert "cannot represent this model: qk_scale=1.0 (nanochat: 1.2)" in capsys.readouterr().err
    assert not (tmp_path / "nc").exists()


def test_generation1_also_round_trips_through_the_nanochat_format(tmp_path):
    config = NanoChatHFConfig(n_layer=2, n_embd=64, n_head=4, vocab_size=256, sequence_len=64)
    randomize_gen2_(NanoChatHFForCausalLM(config), seed=4).save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "nc", to_format="nanochat", step=3)
    meta = json.loads((tmp_path / "nc" / "meta_000003.json").read_text())
    assert "window_pattern" not in meta["model_config"]  # generation 1's meta
    convert(tmp_path / "nc", tmp_path / "hf2")
    before, after = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "hf2" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert NanoChatHFConfig.from_pretrained(tmp_path / "hf2").generation == 1
