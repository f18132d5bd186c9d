"""Reading the DCLM bundle: every mistake is reported with its file, task, line or field."""

import json
import shutil
import zipfile

import pytest
from eval_helpers import CORE_YAML, core_examples, write_bundle

from nanochat_hf.errors import UserInputError
from nanochat_hf.eval.bundle import load_bundle, write_embedded_bundle


@pytest.fixture
def bundle(tmp_path):
    return write_bundle(tmp_path / "bundle", core_examples(count=8))


def test_reads_tasks_baselines_and_examples(bundle):
    loaded = load_bundle(bundle)
    assert loaded.labels == ["toy_mc", "toy_schema", "toy_lm"]
    mc, schema, lm = loaded.tasks
    assert (mc.task_type, mc.num_fewshot, mc.continuation_delimiter, mc.random_baseline) == (
        "multiple_choice",
        2,
        " ",
        25.0,
    )
    assert (schema.num_fewshot, schema.continuation_delimiter) == (1, "\n")
    assert len(lm.examples) == 8 and lm.examples[0]["context"]
    assert load_bundle(bundle, ["toy_lm"]).labels == ["toy_lm"]


def test_zip_and_nested_eval_bundle_folder(bundle, tmp_path):
    nested = tmp_path / "outer"
    shutil.copytree(bundle, nested / "eval_bundle")
    assert load_bundle(nested).labels == ["toy_mc", "toy_schema", "toy_lm"]
    archive = tmp_path / "eval_bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (nested / "eval_bundle").rglob("*"):
            zf.write(path, path.relative_to(nested))
    assert load_bundle(archive).labels == ["toy_mc", "toy_schema", "toy_lm"]


def test_missing_core_yaml(bundle):
    (bundle / "core.yaml").unlink()
    with pytest.raises(UserInputError, match=r"no core\.yaml in this folder"):
        load_bundle(bundle)


def test_unknown_task_type_names_the_task(bundle):
    (bundle / "core.yaml").write_text(CORE_YAML.replace("icl_task_type: schema", "icl_task_type: ranking"))
    with pytest.raises(UserInputError, match=r"core\.yaml task 'toy_schema': unknown icl_task_type 'ranking'"):
        load_bundle(bundle)


def test_jsonl_line_missing_a_field_names_file_line_and_field(bundle):
    path = bundle / "eval_data" / "toy" / "mc.jsonl"
    lines = path.read_text().splitlines()
    broken = json.loads(lines[2])
    del broken["choices"]
    lines[2] = json.dumps(broken)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserInputError, match=r"mc\.jsonl line 3: missing field 'choices'"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"query": "q", "choices": ["a", "b"], "gold": 5}', "'gold' 5 is not an index"),
        ('{"query": "q", "choices": "ab", "gold": 0}', "'choices' must be a list"),
    ],
)
def test_malformed_lines(bundle, line, message):
    path = bundle / "eval_data" / "toy" / "mc.jsonl"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(UserInputError, match=message):
        load_bundle(bundle)


def test_missing_baseline_data_file_and_labels(bundle):
    (bundle / "eval_meta_data.csv").write_text("Eval Task,Random baseline\ntoy_mc,25\ntoy_lm,0\n")
    with pytest.raises(UserInputError, match="no 'Random baseline' row for task 'toy_schema'"):
        load_bundle(bundle)
    with pytest.raises(UserInputError, match=r"--core-tasks: \['nope'\] not in"):
        load_bundle(bundle, ["nope"])
    (bundle / "eval_data" / "toy" / "lm.jsonl").unlink()
    with pytest.raises(UserInputError, match="data file .*lm.jsonl is missing"):
        load_bundle(bundle, ["toy_lm"])


def test_too_few_examples_for_the_shots(bundle):
    task = load_bundle(bundle, ["toy_mc"]).tasks[0]
    with pytest.raises(UserInputError, match="2-shot needs more than 2 examples"):
        task.select(2)


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(UserInputError, match="someone/eval-bundle: not a local folder, and the Hub dataset could not"):
        load_bundle("someone/eval-bundle")
    with pytest.raises(UserInputError, match="no such folder or zip file"):
        load_bundle("./missing-bundle")


def test_embedded_bundle_has_one_task_of_each_type(tmp_path):
    folder = write_embedded_bundle(tmp_path / "embedded", examples_per_task=10)
    loaded = load_bundle(folder)
    assert [t.task_type for t in loaded.tasks] == ["language_modeling", "multiple_choice", "schema"]
    assert all(len(t.examples) == 10 for t in loaded.tasks)
    again = write_embedded_bundle(tmp_path / "again", examples_per_task=10)
    for name in ("pydoc_lambada", "pydoc_docstring", "pydoc_owner"):  # the same examples every time
        assert (again / "eval_data" / f"{name}.jsonl").read_text() == (
            folder / "eval_data" / f"{name}.jsonl"
        ).read_text()
    mc = loaded.tasks[1].examples[0]
    assert len(set(mc["choices"])) == 4 and 0 <= mc["gold"] < 4
    assert load_bundle("embedded").labels == loaded.labels
