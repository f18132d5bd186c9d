import json
import warnings

import pytest
import torch
from helpers import (
    nanochat_reference_greedy,
    nanochat_reference_logits,
    randomize_,
    write_nanochat_tokenizer_dir,
)
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from transformers import NanoChatForCausalLM as NativeForCausalLM

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.cli import main as cli_main
from nanochat_hf.conversion import config_to_native, convert, detect_format, state_dict_to_native


META_KEYS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")


def write_nanochat_folder(folder, config, step, seed, compiled_prefix=True, mutate=None):
    """A checkpoint folder as nanochat's base_train writes it on CUDA (wte in bfloat16, the rest float32)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = randomize_(NanoChatHFForCausalLM(config), seed=seed)
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    state_dict["transformer.wte.weight"] = state_dict["transformer.wte.weight"].bfloat16()
    if compiled_prefix:
        state_dict = {f"_orig_mod.{k}": v for k, v in state_dict.items()}
    meta = {"step": step, "val_bpb": 1.0, "model_config": {k: getattr(config, k) for k in META_KEYS}}
    if mutate:
        mutate(state_dict, meta)
    torch.save(state_dict, folder / f"model_{step:06d}.pt")
    (folder / f"meta_{step:06d}.json").write_text(json.dumps(meta, indent=2))
    torch.save([{}, {}], folder / f"optim_{step:06d}_rank0.pt")
    return state_dict


@pytest.fixture
def config():
    return NanoChatHFConfig(n_layer=2, n_embd=64, n_head=4, n_kv_head=4, vocab_size=256, sequence_len=64)


def test_nanochat_to_hf_matches_nanochat_math(config, tmp_path):
    src = tmp_path / "base_checkpoints" / "d2"
    write_nanochat_folder(src, config, step=5, seed=1)
    newest = write_nanochat_folder(src, config, step=10, seed=2)
    assert detect_format(src) == "nanochat"
    assert cli_main(["convert", str(src), str(tmp_path / "hf")]) == 0

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(model, NanoChatHFForCausalLM) and model.config.rotary_dtype == "bfloat16"
    assert model.lm_head.weight.dtype == torch.float32  # default: the source head's dtype
    idx = torch.randint(0, config.vocab_size, (2, 20))
    with torch.no_grad():
        ours = model(idx).logits
    torch.testing.assert_close(ours, nanochat_reference_logits(newest, config, idx), atol=1e-4, rtol=0)
    prompt = idx[:1, :6]
    expected = nanochat_reference_greedy(newest, config, prompt, steps=32)
    assert torch.equal(model.generate(prompt, max_new_tokens=32, do_sample=False, pad_token_id=0), expected)


def test_nanochat_step_selection_and_dtype(config, tmp_path):
    src = tmp_path / "ckpt"
    older = write_nanochat_folder(src, config, step=5, seed=1, compiled_prefix=False)
    write_nanochat_folder(src, config, step=10, seed=2)
    convert(src, tmp_path / "hf", step=5, dtype="bfloat16")
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert torch.equal(weights["lm_head.weight"], older["lm_head.weight"].bfloat16())


def test_native_to_hf_matches_builtin_model(config, tmp_path):
    native_config = config_to_native(NanoChatHFConfig(**{**config.to_dict(), "rotary_dtype": "float32"}))
    native = randomize_(NativeForCausalLM(native_config), seed=5).eval()
    native.save_pretrained(tmp_path / "native")
    assert detect_format(tmp_path / "native") == "native"
    convert(tmp_path / "native", tmp_path / "hf")

    ours = NanoChatHFForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert ours.config.rotary_dtype == "float32"
    idx = torch.randint(0, config.vocab_size, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx).logits, native(idx).logits, atol=1e-4, rtol=0)
    kwargs = dict(max_new_tokens=32, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(idx[:1, :5], **kwargs), native.generate(idx[:1, :5], **kwargs))


def test_hf_to_native_loads_in_stock_transformers_and_round_trips(config, tmp_path):
    config.rotary_dtype = "float32"
    model = randomize_(NanoChatHFForCausalLM(config), seed=7).eval()
    model.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "native", to_format="native")

    # No remote code: the built-in class is chosen by model_type "nanochat".
    native = AutoModelForCausalLM.from_pretrained(tmp_path / "native").eval()
    assert isinstance(native, NativeForCausalLM)
    idx = torch.randint(0, config.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(native(idx).logits, model(idx).logits, atol=1e-4, rtol=0)

    convert(tmp_path / "native", tmp_path / "hf2")
    before = load_file(tmp_path / "hf" / "model.safetensors")
    after = load_file(tmp_path / "hf2" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_export_of_bfloat16_rotary_warns_and_round_trip_restores_it(config, tmp_path):
    randomize_(NanoChatHFForCausalLM(config)).save_pretrained(tmp_path / "hf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert(tmp_path / "hf", tmp_path / "native", to_format="native")
    assert any("rotary" in str(w.message) for w in caught)
    convert(tmp_path / "native", tmp_path / "hf2")
    assert NanoChatHFConfig.from_pretrained(tmp_path / "hf2").rotary_dtype == "bfloat16"


# ---------------------------------------------------------------------------------------------------------
# Bad input: a clear message naming the file or key, exit status 2, and no destination written


def drop_key(key):
    return lambda sd, meta: sd.pop(f"_orig_mod.{key}")


def add_key(key):
    return lambda sd, meta: sd.__setitem__(key, torch.zeros(1))


def reshape_key(key):
    return lambda sd, meta: sd.__setitem__(f"_orig_mod.{key}", torch.zeros(3, 3))


def meta_says(field, value):
    return lambda sd, meta: meta["model_config"].__setitem__(field, value)


def meta_drop(field):
    return lambda sd, meta: meta["model_config"].pop(field)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (drop_key("lm_head.weight"), "missing key(s) ['lm_head.weight']"),
        (add_key("transformer.h.9.attn.c_q.weight"), "unexpected key(s) ['transformer.h.9.attn.c_q.weight']"),
        (add_key("resid_lambdas"), "generation-2"),
        (reshape_key("transformer.h.1.mlp.c_fc.weight"), "transformer.h.1.mlp.c_fc.weight has shape (3, 3)"),
        (
            meta_says("n_embd", 128),
            "transformer.wte.weight has shape (256, 64), but the model config implies (256, 128)",
        ),
        (meta_drop("n_kv_head"), "meta_000010.json: 'model_config' lacks ['n_kv_head']"),
        (meta_says("n_head", 3), "meta_000010.json: invalid 'model_config'"),
    ],
)
def test_bad_nanochat_checkpoints_fail_clearly(config, tmp_path, capsys, mutate, expected):
    src = tmp_path / "ckpt"
    write_nanochat_folder(src, config, step=10, seed=0, mutate=mutate)
    dst = tmp_path / "out"
    assert cli_main(["convert", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left behind


def test_missing_files_and_bad_arguments_fail_clearly(config, tmp_path, capsys):
    src = tmp_path / "ckpt"
    write_nanochat_folder(src, config, step=10, seed=0)

    (src / "meta_000010.json").rename(tmp_path / "meta.json")
    assert cli_main(["convert", str(src), str(tmp_path / "out")]) == 2
    assert "meta_000010.json: missing" in capsys.readouterr().err
    (tmp_path / "meta.json").rename(src / "meta_000010.json")

    assert cli_main(["convert", str(src), str(tmp_path / "out"), "--step", "7"]) == 2
    assert "no checkpoint for step 7; available steps: [10]" in capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert cli_main(["convert", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "found neither nanochat checkpoints" in capsys.readouterr().err

    assert cli_main(["convert", str(src), str(tmp_path / "out"), "--from", "native"]) == 2
    assert "config.json: missing" in capsys.readouterr().err

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("precious")
    assert cli_main(["convert", str(src), str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "precious"

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert cli_main(["convert", str(tmp_path / "other"), str(tmp_path / "out")]) == 2
    assert "model_type is 'llama'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_hf_folder_with_missing_weights_file_fails_clearly(config, tmp_path, capsys):
    NanoChatHFForCausalLM(config).save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    assert cli_main(["convert", str(tmp_path / "hf"), str(tmp_path / "out"), "--to", "native"]) == 2
    assert "no model.safetensors" in capsys.readouterr().err


def test_failure_while_writing_leaves_no_destination(config, tmp_path, monkeypatch):
    NanoChatHFForCausalLM(config).save_pretrained(tmp_path / "hf")

    def save_then_crash(self, folder, *args, **kwargs):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(NativeForCausalLM, "save_pretrained", save_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        convert(tmp_path / "hf", tmp_path / "native", to_format="native")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_state_dict_maps_cover_every_native_key(config):
    native = NativeForCausalLM(config_to_native(config, warn=False))
    ours = NanoChatHFForCausalLM(config)
    assert set(state_dict_to_native(ours.state_dict())) == set(native.state_dict())


def test_convert_with_nanochat_tokenizer(tmp_path, capsys):
    from transformers import AutoTokenizer

    from nanochat_hf.embedded_corpus import iter_embedded_documents

    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    encoding = write_nanochat_tokenizer_dir(tokenizer_dir, iter_embedded_documents(), vocab_size=400)
    config = NanoChatHFConfig(n_layer=1, n_embd=64, n_head=4, vocab_size=encoding.n_vocab, sequence_len=64)
    write_nanochat_folder(tmp_path / "ckpt", config, step=3, seed=0)
    assert cli_main(["convert", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--tokenizer", str(tokenizer_dir)]) == 0

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Hello world, 1234 tokens!"
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == encoding.encode_ordinary(text)
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert saved["bos_token_id"] == encoding.encode_single_token("<|bos|>")
    assert (tmp_path / "hf" / "token_bytes.pt").is_file()

    # A tokenizer whose vocabulary does not match the model is refused before anything is written.
    small = NanoChatHFConfig(n_layer=1, n_embd=64, n_head=4, vocab_size=300, sequence_len=64)
    write_nanochat_folder(tmp_path / "ckpt300", small, step=3, seed=0)
    code = cli_main(["convert", str(tmp_path / "ckpt300"), str(tmp_path / "hf300"), "--tokenizer", str(tokenizer_dir)])
    assert code == 2
    assert f"tokenizer has {encoding.n_vocab} tokens but the model's vocab_size is 300" in capsys.readouterr().err
    assert not (tmp_path / "hf300").exists()


def test_folder_with_two_formats_needs_from(config, tmp_path, capsys):
    src = tmp_path / "mixed"
    write_nanochat_folder(src, config, step=1, seed=0)
    NanoChatHFForCausalLM(config).save_pretrained(src)
    assert cli_main(["convert", str(src), str(tmp_path / "out")]) == 2
    assert "pass --from to choose" in capsys.readouterr().err
    assert cli_main(["convert", str(src), str(tmp_path / "out"), "--from", "nanochat"]) == 0
    assert cli_main(["convert", str(src), str(tmp_path / "out-hf"), "--from", "hf"]) == 0
