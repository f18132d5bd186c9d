import os
import tempfile


# Nothing in the test suite may reach the network, and the Hub cache (remote-code modules included)
# must not leak between runs. Set before transformers is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="nanochat-hf-test-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def tiny_config():
    from nanochat_hf import NanoChatHFConfig

    return NanoChatHFConfig(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, vocab_size=256, sequence_len=64)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A 512-token tokenizer trained once per test session on the embedded corpus."""
    from helpers import write_tiny_tokenizer

    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Tiny tensors gain nothing from intra-op threads, which only spin-wait on a busy 2-core machine.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_cpu_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
