from dataclasses import replace

import pytest

from harness.matrix import load_matrix, parse_matrix
from harness.spec import CellSpec, SpecError


def write(tmp_path, text, name="m.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cartesian_product_with_exclusion_override_and_extra_cells(tmp_path):
    path = write(tmp_path, """
[matrix]
name = "t"
[defaults]
checkpoint = "bert-base-uncased"
max_steps = 20
[axes]
padding = ["dynamic", "max_length"]
batch_size = [8, 16, 32]
precision = ["fp32", "bf16"]
[[exclude]]
padding = "max_length"
batch_size = [16, 32]
[[override]]
where = { precision = "bf16" }
set = { learning_rate = 3e-5 }
[[cells]]
label = "finetune"
max_steps = -1
num_train_epochs = 2
""")
    m = load_matrix(path)
    assert m.name == "t"
    assert len(m) == 2 * 3 * 2 - 2 * 2 + 1
    assert "mrpc-bert-base-uncased-dynamic-bs32-bf16" in m.ids
    assert "mrpc-bert-base-uncased-max_length-bs16-fp32" not in m.ids
    by_id = {c.id: c for c in m.cells}
    assert by_id["mrpc-bert-base-uncased-dynamic-bs8-bf16"].learning_rate == 3e-5
    assert by_id["mrpc-bert-base-uncased-dynamic-bs8-fp32"].learning_rate == 2e-5
    extra = by_id["mrpc-bert-base-uncased-dynamic-bs32-fp32-finetune"]
    assert extra.max_steps == -1 and extra.num_train_epochs == 2.0


def test_training_arguments_axis_becomes_part_of_the_id(tmp_path):
    path = write(tmp_path, """
[axes]
gradient_accumulation_steps = [1, 2]
learning_rate = [2e-5, 3e-5]
""")
    m = load_matrix(path)
    assert len(m) == 4
    cell = next(c for c in m.cells if c.extra_training_args["gradient_accumulation_steps"] == 2 and c.learning_rate == 3e-5)
    assert cell.id == "mrpc-bert-base-uncased-dynamic-bs32-fp32-gradient_accumulation_steps2-lr3e-05"


def test_the_defaults_make_the_readme_id():
    assert CellSpec(padding="dynamic", batch_size=32, precision="bf16").id == "mrpc-bert-base-uncased-dynamic-bs32-bf16"


@pytest.mark.parametrize(
    "axes, fragments",
    [
        ('precision = ["fp8"]', ["m.toml", "`precision` = 'fp8'", "['fp32', 'fp16', 'bf16']"]),
        ('padding = ["dinamic"]', ["m.toml", "`padding` = 'dinamic'", "did you mean 'dynamic'", "bucketed"]),
        ('batch_size = [0]', ["m.toml", "`batch_size` must be an integer >= 1"]),
        ('batch_sise = [8]', ["m.toml", "[axes] batch_sise", "unknown key", "did you mean 'batch_size'", "TrainingArguments"]),
        ('fp16 = [true]', ["m.toml", "`fp16` is set by the harness", "use `precision`"]),
        ('padding = "dynamic"', ["m.toml", "`padding` must be a non-empty list"]),
        ('padding = []', ["m.toml", "`padding` must be a non-empty list"]),
        ('batch_size = [8, 8]', ["m.toml", "repeats a value"]),
        ('max_steps = [3]\ntiming_warmup_steps = [5]', ["m.toml", "must exceed `timing_warmup_steps`"]),
    ],
)
def test_malformed_axes_are_refused_with_file_key_and_allowed_values(tmp_path, axes, fragments):
    path = write(tmp_path, f"[axes]\n{axes}\n")
    with pytest.raises(SpecError) as info:
        load_matrix(path)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[axes\npadding = 1", "not valid TOML"),
        ("[axis]\npadding = ['dynamic']", "unknown section(s) ['axis']"),
        ("[defaults]\npadding = ['dynamic']", "lists of values to sweep belong in [axes]"),
        ("[matrix]\nname = 'x'", "nothing to run"),
        ("[axes]\npadding = ['dynamic']\n[[exclude]]\nprecision = 'fp32'", "`precision` is not an axis"),
        ("[axes]\npadding = ['dynamic']\n[[exclude]]\npadding = 'dynamic'", "every cell was excluded"),
        ("[axes]\npadding = ['dynamic']\n[[override]]\nwhere = {padding='dynamic'}", "needs `where"),
        ("[axes]\npadding = ['dynamic']\n[[cells]]\nlabel = ''", "two cells share the id"),
        ("[matrix]\nnmae = 'x'\n[axes]\npadding = ['dynamic']", "[matrix]: unknown key(s) ['nmae']"),
        ("[defaults]\ntraining_args = {tf32 = true}\n[axes]\npadding = ['dynamic']", "write TrainingArguments fields directly"),
        ("[defaults]\nlearning_rate = nan\n[axes]\npadding = ['dynamic']", "`learning_rate` must be a finite non-negative"),
        ("[defaults]\nmax_grad_norm = nan\n[axes]\npadding = ['dynamic']", "`max_grad_norm` is NaN: a matrix may not hold NaN"),
        ("[defaults]\ntimeout = inf\n[axes]\npadding = ['dynamic']", "`timeout` must be a positive number of seconds (finite)"),
        ("[axes]\npadding = ['dynamic']\n[[cells]]\nlabel = '" + "x" * 250 + "'", "an id names the cell's files"),
    ],
)
def test_malformed_matrices_are_refused(tmp_path, text, fragment):
    with pytest.raises(SpecError) as info:
        load_matrix(write(tmp_path, text))
    assert fragment in str(info.value)
    assert "m.toml" in str(info.value)


def test_missing_matrix_file_names_the_file(tmp_path):
    with pytest.raises(SpecError, match="nope.toml: cannot read matrix file"):
        load_matrix(tmp_path / "nope.toml")


def test_spec_round_trips_and_is_hashable():
    cell = CellSpec(checkpoint="roberta-base", precision="fp16", training_args={"tf32": True, "gradient_accumulation_steps": 2})
    again = CellSpec.from_dict(cell.to_dict())
    assert again == cell and hash(again) == hash(cell)
    assert cell.to_dict()["training_args"] == {"gradient_accumulation_steps": 2, "tf32": True}


def test_unknown_spec_fields_are_refused_on_read():
    data = CellSpec().to_dict() | {"precison": "bf16"}
    with pytest.raises(SpecError, match="unknown cell field"):
        CellSpec.from_dict(data)


def test_the_shipped_matrices_expand():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "harness" / "matrices"
    smoke = load_matrix(root / "smoke.toml")
    nightly = load_matrix(root / "nightly.toml")
    assert any(c.weights == "pretrained" and c.max_steps < 0 for c in smoke.cells)
    assert {c.padding for c in smoke.cells} >= {"dynamic", "max_length"}
    assert len({c.batch_size for c in smoke.cells if c.weights == "random"}) >= 2
    assert len(nightly) >= 3 * 2 * 3 * 3
    assert {c.checkpoint for c in nightly.cells} >= {"bert-base-uncased", "distilbert-base-uncased", "roberta-base"}
    assert {c.precision for c in nightly.cells} == {"fp32", "fp16", "bf16"}
    assert {c.batch_size for c in nightly.cells} == {8, 16, 32}
    assert {c.padding for c in nightly.cells} == {"dynamic", "max_length"}
    for path in root.glob("*.toml"):  # every shipped matrix expands
        assert len(load_matrix(path)) > 0


def test_parse_matrix_from_a_mapping():
    m = parse_matrix({"axes": {"batch_size": [8, 16]}}, source="inline")
    assert m.ids == ["mrpc-bert-base-uncased-dynamic-bs8-fp32", "mrpc-bert-base-uncased-dynamic-bs16-fp32"]


def test_recipe_changes_name_what_the_id_does_not_show():
    from harness.spec import recipe_changes

    old = CellSpec(max_steps=30, thresholds=("train_samples_per_s:-5%",))
    assert recipe_changes(old, replace(old, thresholds=("train_samples_per_s:-15%",))) == []
    new = replace(old, max_steps=50, training_args={"tf32": True})
    assert new.id == old.id
    assert recipe_changes(old, new) == ["max_steps 30 -> 50", "training_args {} -> {'tf32': True}"]


def test_an_infinite_max_grad_norm_is_a_legal_cell():
    cell = CellSpec(training_args={"max_grad_norm": float("inf")})
    assert dict(cell.training_args)["max_grad_norm"] == float("inf")

