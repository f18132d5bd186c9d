"""A real tiny pretraining run, evaluated: CORE logged during training by `CoreEvalCallback`, bits per
byte equal to the training log's, the report card (Markdown, valid PNGs, model card, Hub upload) and the
quickstart's last stage."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import intercept_hub_uploads, tiny_pretrain_argv
from PIL import Image

from nanochat_hf.cli import main as cli_main
from nanochat_hf.errors import UserInputError
from nanochat_hf.eval.report import CARD_BEGIN, CARD_END, embed_report, find_checkpoint_folder, write_report


REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_cpu_thread")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer_dir):
    from nanochat_hf.training import parse_pretrain_arguments, run_pretraining

    output = tmp_path_factory.mktemp("run") / "run"
    argv = tiny_pretrain_argv(
        output, tokenizer_dir, eval_every=2, eval_tokens=512, save_strategy="steps", save_steps=3
    )
    argv += ["--core_every", "3", "--core_bundle", "embedded", "--core_max_per_task", "8"]
    run_pretraining(*parse_pretrain_arguments(argv))
    return output


def log_history(folder):
    return json.loads((folder / "trainer_state.json").read_text())["log_history"]


def test_core_is_logged_during_pretraining(run_dir):
    logged = [entry for entry in log_history(run_dir / "final") if "core_metric" in entry]
    assert [entry["step"] for entry in logged] == [3, 6]
    for entry in logged:
        centered = [entry[f"core/{label}"] for label in ("pydoc_lambada", "pydoc_docstring", "pydoc_owner")]
        assert entry["core_metric"] == pytest.approx(sum(centered) / 3)


def test_bpb_equals_the_validation_bpb_the_run_logged(run_dir, capsys):
    final = run_dir / "final"
    assert cli_main(["eval", str(final), "--tasks", "bpb", "--bpb-tokens", "512", "--json", "--no-progress"]) == 0
    bpb = json.loads(capsys.readouterr().out)["bpb"]
    logged = [entry["val_bpb"] for entry in log_history(final) if "val_bpb" in entry]
    assert bpb["bpb"] == pytest.approx(logged[-1], rel=1e-9)  # same rows, same model, same rule


def test_report_card_with_plots_and_model_card(run_dir, capsys):
    final = run_dir / "final"
    argv = ["eval", str(final), "--tasks", "core", "--eval-bundle", "embedded", "--max-per-task", "8", "--no-progress"]
    assert cli_main([*argv, "--output", str(final / "eval_core.json")]) == 0
    assert cli_main(["report", str(run_dir)]) == 0
    assert "wrote" in capsys.readouterr().out
    report = (final / "report.md").read_text()
    for heading in (
        "## Model",
        "## Data",
        "## Compute",
        "## Time and cost",
        "## Final loss and bits per byte",
        "## CORE",
    ):
        assert heading in report
    core = json.loads((final / "eval_core.json").read_text())["core"]
    assert f"| **CORE** | – | {core['core_metric']:.4f} |" in report
    assert "GPT-2 XL (1.5B) | 0.2565" in report
    last_bpb = [e["val_bpb"] for e in log_history(final) if "val_bpb" in e][-1]
    assert f"| final validation bpb (training log) | {last_bpb:.4f} |" in report
    for name in ("report_loss.png", "report_val_bpb.png", "report_mfu.png"):
        data = (final / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        with Image.open(final / name) as image:
            image.verify()
        with Image.open(final / name) as image:
            assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 100
        assert f"]({name})" in report
    card = (final / "README.md").read_text()
    assert card.startswith("---") and CARD_BEGIN in card and "### CORE" in card  # headings one level down
    cli_main(["report", str(run_dir)])  # again: the report is replaced, not appended
    assert (final / "README.md").read_text().count(CARD_BEGIN) == 1


def test_model_card_rewrite_keeps_the_report(run_dir):
    from nanochat_hf.training.model_card import base_model_card, write_model_card

    final = run_dir / "final"
    write_report(run_dir)
    settings = json.loads((final / "run_settings.json").read_text())
    write_model_card(final, settings=settings, log_history=log_history(final), **base_model_card(settings, 6, 6))
    card = (final / "README.md").read_text()
    assert "## Training run" in card and card.count(CARD_BEGIN) == 1 and "### Training curves" in card


def test_report_of_a_checkpoint_and_errors(run_dir, tmp_path):
    assert find_checkpoint_folder(run_dir / "checkpoint-3") == run_dir / "checkpoint-3"
    copy = shutil.copytree(run_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("final"))
    assert find_checkpoint_folder(copy) == copy / "checkpoint-6"
    path = write_report(copy)
    assert path.parent == copy / "checkpoint-6" and "Not evaluated yet" in path.read_text()
    with pytest.raises(UserInputError, match="no trainer_state.json"):
        find_checkpoint_folder(tmp_path)


def test_report_keeps_a_published_folder_complete(run_dir):
    # The report rewrites README.md and adds report.md and plots in a folder whose manifest lists every file's
    # size; the folder must still be judged complete (else the quickstart redoes a finished stage).
    from nanochat_hf.folder_manifest import MANIFEST_FILENAME
    from nanochat_hf.training.checkpoints import final_problem

    final = run_dir / "final"
    mode = (final / MANIFEST_FILENAME).stat().st_mode & 0o777
    assert cli_main(["report", str(run_dir)]) == 0
    assert final_problem(final) is None
    assert (final / MANIFEST_FILENAME).stat().st_mode & 0o777 == mode  # not the temporary file's 0600
    listed = json.loads((final / MANIFEST_FILENAME).read_text())
    assert listed["README.md"] == (final / "README.md").stat().st_size and "report.md" in listed


def test_embed_report_between_markers():
    card = embed_report("---\nx: 1\n---\n# Card\n", "# Report\n## Part\ntext")
    assert card.endswith(f"{CARD_BEGIN}\n## Report\n### Part\ntext\n{CARD_END}\n")
    again = embed_report(card + "\nafter\n", "# New")
    assert "## New" in again and "## Report" not in again and again.endswith("after\n")


def test_push_uploads_card_report_and_plots(run_dir, monkeypatch):
    """The real upload path, intercepted only where it would reach the network."""
    uploaded = intercept_hub_uploads(monkeypatch)
    assert cli_main(["report", str(run_dir), "--push-to-hub", "someone/tiny-nanochat"]) == 0
    assert set(uploaded) == {"README.md", "report.md", "report_loss.png", "report_val_bpb.png", "report_mfu.png"}
    card = uploaded["README.md"].decode()
    assert CARD_BEGIN in card and yaml.safe_load(card.split("---")[1])["library_name"] == "transformers"


def test_quickstart_ends_with_core_and_the_report(run_dir, tmp_path, capsys):
    """The quickstart's last stage on finished earlier stages (a stage whose folder exists is skipped)."""
    root = tmp_path / "runs"
    shutil.copytree(run_dir, root / "quickstart")
    shutil.copytree(run_dir / "final", root / "quickstart-sft" / "final")  # any model with nanochat's tokenizer
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "recipes" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    assert quickstart.main(["--output-root", str(root), "--prompt", "Hi"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("CORE (embedded bundle, 3 tasks): ")
    core = json.loads((root / "quickstart" / "final" / "eval_core.json").read_text())["core"]["core_metric"]
    assert lines[-1].endswith(f"{core:.4f}")
    assert (root / "quickstart" / "final" / "report_loss.png").read_bytes().startswith(PNG_SIGNATURE)


def test_report_of_a_chat_run_has_the_chatcore_table(tmp_path, capsys):
    from chat_helpers import chat_args, save_tiny_model
    from test_eval_chat import ARC_ROWS, write_jsonl

    from nanochat_hf.training.sft import run_sft

    base = save_tiny_model(tmp_path / "base", random_weights=True, n_layer=2)
    final = run_sft(*chat_args(tmp_path / "sft", base, max_steps=2))
    data = write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)
    argv = ["eval", str(final), "--tasks", "arc-easy", "--dataset", f"arc-easy={data}", "--no-progress"]
    assert cli_main([*argv, "--output", str(final / "eval_chat.json")]) == 0
    assert cli_main(["report", str(tmp_path / "sft")]) == 0
    report = (final / "report.md").read_text()
    accuracy = json.loads((final / "eval_chat.json").read_text())["chat"]["accuracy"]["ARC-Easy"]
    assert "# Report card: nanochat d2 (SFT)" in report and "## ChatCORE" in report
    assert f"| ARC-Easy | {accuracy:.4f} |" in report and "| base model |" in report
