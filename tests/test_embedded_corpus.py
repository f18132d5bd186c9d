import os
import subprocess
import sys

from nanochat_hf.embedded_corpus import embedded_corpus_fingerprint, iter_embedded_documents


def test_documents_are_nonempty_unique_strings_totalling_megabytes():
    documents = list(iter_embedded_documents())
    assert all(isinstance(document, str) and document.strip() for document in documents)
    assert len(set(documents)) == len(documents)
    total_chars = sum(len(document) for document in documents)
    assert total_chars > 1_500_000, total_chars  # enough text to train a small BPE on


def test_starts_with_the_pydoc_topics_in_sorted_order():
    from pydoc_data.topics import topics

    first_names = sorted(topics)[:3]
    assert list(iter_embedded_documents(max_docs=3)) == [topics[name].strip() for name in first_names]


def test_contains_standard_library_docstrings_headed_by_dotted_names():
    documents = list(iter_embedded_documents())
    assert any(document.startswith("json.dumps\n\n") for document in documents)


def test_max_docs_gives_a_prefix():
    everything = list(iter_embedded_documents())
    assert list(iter_embedded_documents(max_docs=50)) == everything[:50]
    assert list(iter_embedded_documents(max_docs=0)) == []


def test_same_documents_in_a_fresh_interpreter_with_another_hash_seed():
    # Determinism across runs: a new process (different import history, different str hash seed)
    # must walk the same documents in the same order.
    # The module is loaded from its file, without the package (whose __init__ imports torch and
    # transformers), so the two processes also differ in which other modules are loaded.
    import nanochat_hf.embedded_corpus as module

    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('corpus', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(m.embedded_corpus_fingerprint())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    fresh = subprocess.run(
        [sys.executable, "-c", code, module.__file__], env=env, capture_output=True, text=True, check=True
    )
    assert fresh.stdout.strip() == embedded_corpus_fingerprint()
