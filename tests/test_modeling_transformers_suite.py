"""transformers' own common model tests (`ModelTesterMixin`) run against our classes, generation 1 and 2.

The mixins ship in transformers' source distribution, not in its wheel. `.ci/run` downloads the installed
version's sdist into `.cache/transformers-sdist/` (ignored by git) and unpacks its `tests/`; this module
imports `tests/test_modeling_common.py` from there under a package name of its own, and skips when the
cache is absent. Nothing of transformers' tests is copied into this repository.

The 5.24 sdist ships only the top-level `tests/*.py`: `tests/generation/test_utils.py`
(`GenerationTesterMixin`) and `tests/exporters/test_export.py` (`ExportTesterMixin`, a base of
`ModelTesterMixin`) are missing from it. Both are replaced by empty classes so that the module imports;
the generation behaviour they would check is tested in tests/test_modeling_transformers_api.py and
tests/test_modeling_gen2_generation.py instead. Tests that cannot apply by design are listed, with their
reasons, in `BY_DESIGN_SKIPS`.
"""

import importlib
import sys
import types
import unittest
from pathlib import Path
from unittest import mock

import pytest
import torch
import transformers
from transformers.models.auto import modeling_auto

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM, NanoChatHFModel


SDIST_TESTS = (
    Path(__file__).resolve().parent.parent
    / ".cache"
    / "transformers-sdist"
    / f"transformers-{transformers.__version__}"
    / "tests"
)
PACKAGE = "transformers_sdist_tests"

# Tests of ModelTesterMixin that cannot apply to this model, each with the reason.
BY_DESIGN_SKIPS = {
    "test_generation_tester_mixin_inheritance": "GenerationTesterMixin is not in transformers' sdist (see the module docstring)",
    # Our from-scratch init zeroes both c_proj, so every block starts as the identity: no attention output,
    # so RoPE cannot change it. RoPE scaling is tested on random weights in tests/test_modeling_transformers_api.py.
    "test_model_rope_scaling_from_config_0_linear": "from-scratch blocks are the identity (zero c_proj); RoPE has no effect",
    "test_model_rope_scaling_from_config_1_dynamic": "from-scratch blocks are the identity (zero c_proj); RoPE has no effect",
    "test_model_rope_scaling_from_config_2_yarn": "from-scratch blocks are the identity (zero c_proj); RoPE has no effect",
}
GENERATION1_BY_DESIGN_SKIPS = {
    "test_causal_lm_loss_honors_shift_labels": "from-scratch lm_head is zero (as nanochat), so the logits are uniform "
    "and the loss is ln(vocab) for any targets; shift_labels are tested in tests/test_chunked_loss.py",
}
GENERATION2_BY_DESIGN_SKIPS = {
    "test_inputs_embeds": "value embeddings look up token ids, so generation 2 refuses `inputs_embeds` alone",
    "test_inputs_embeds_matches_input_ids": "value embeddings look up token ids: `inputs_embeds` alone is refused",
}


def load_model_tester_mixin():
    """transformers' ModelTesterMixin from the unpacked sdist, or None when the cache is absent."""
    if not (SDIST_TESTS / "test_modeling_common.py").is_file():
        return None
    if f"{PACKAGE}.test_modeling_common" in sys.modules:
        return sys.modules[f"{PACKAGE}.test_modeling_common"].ModelTesterMixin
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(SDIST_TESTS)]
    sys.modules[PACKAGE] = package
    # Stand-ins for the two subpackages the sdist leaves out (see the module docstring).
    for name, cls in (
        ("exporters.test_export", "ExportTesterMixin"),
        ("generation.test_utils", "GenerationTesterMixin"),
    ):
        parent, _, _ = name.partition(".")
        sys.modules.setdefault(f"{PACKAGE}.{parent}", types.ModuleType(f"{PACKAGE}.{parent}")).__path__ = []
        stub = types.ModuleType(f"{PACKAGE}.{name}")
        setattr(stub, cls, type(cls, (), {}))
        sys.modules[f"{PACKAGE}.{name}"] = stub
    return importlib.import_module(f"{PACKAGE}.test_modeling_common").ModelTesterMixin


try:
    ModelTesterMixin = load_model_tester_mixin()
except ModuleNotFoundError as missing:  # the mixins' own test dependencies (e.g. `parameterized`)
    pytest.skip(f"transformers' common tests need {missing.name!r} (`.ci/run` installs it)", allow_module_level=True)
if ModelTesterMixin is None:
    pytest.skip(
        f"transformers' sdist tests are not unpacked at {SDIST_TESTS} (`.ci/run` downloads them)",
        allow_module_level=True,
    )


class NanoChatHFModelTester:
    """The inputs and config transformers' mixins ask a model tester for (a 2-layer, 32-wide model)."""

    def __init__(self, parent, generation=1, batch_size=2, seq_length=7):
        self.parent = parent
        self.generation = generation
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = True
        self.use_input_mask = True
        self.use_labels = True
        self.vocab_size = 99
        self.hidden_size = 32 if generation == 1 else 64
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.num_key_value_heads = 4
        self.max_position_embeddings = 512
        self.pad_token_id = 0

    def get_config(self):
        return NanoChatHFConfig(
            vocab_size=self.vocab_size,
            sequence_len=self.max_position_embeddings,
            n_layer=self.num_hidden_layers,
            n_embd=self.hidden_size,
            n_head=self.num_attention_heads,
            generation=self.generation,
            pad_token_id=self.pad_token_id,
            bos_token_id=1,
            eos_token_id=2,
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = torch.randint(3, self.vocab_size, (self.batch_size, self.seq_length))
        attention_mask = torch.ones_like(input_ids)
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class NanoChatHFModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (NanoChatHFModel, NanoChatHFForCausalLM)
    generation = 1
    # The mixin dates a model by a "# Copyright <year>" line in its config file, which ours has not; run it.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = NanoChatHFModelTester(self, generation=self.generation)
        # The mixins tell a trunk from an LM head (which gets labels, which is trained) by transformers' auto
        # mappings; a built-in model is listed there, ours is added for the test's duration.
        for mapping, name in (
            (modeling_auto.MODEL_MAPPING_NAMES, "NanoChatHFModel"),
            (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "NanoChatHFForCausalLM"),
        ):
            patcher = mock.patch.dict(mapping, {NanoChatHFConfig.model_type: name})
            patcher.start()
            self.addCleanup(patcher.stop)


class NanoChatHFGeneration2ModelTest(NanoChatHFModelTest):
    generation = 2


def skip_by_design(cls, skips: dict[str, str]) -> None:
    for name, reason in skips.items():
        assert hasattr(cls, name), f"{name} is not a test of this transformers version; update the skip list"
        setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))


skip_by_design(NanoChatHFModelTest, {**BY_DESIGN_SKIPS, **GENERATION1_BY_DESIGN_SKIPS})
skip_by_design(NanoChatHFGeneration2ModelTest, {**BY_DESIGN_SKIPS, **GENERATION2_BY_DESIGN_SKIPS})
