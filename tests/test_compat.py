import transformers

from harness import compat


def test_builds_valid_training_arguments_on_the_installed_transformers(tmp_path):
    args = compat.training_arguments(
        output_dir=str(tmp_path), eval_strategy="no", use_cpu=True, group_by_length=True,
        per_device_train_batch_size=4, report_to="none",
    )
    assert isinstance(args, transformers.TrainingArguments)
    assert args.per_device_train_batch_size == 4
    strategy = getattr(args, "eval_strategy", None) or args.evaluation_strategy
    assert str(getattr(strategy, "value", strategy)) == "no"
    grouped = getattr(args, "group_by_length", None) or getattr(args, "train_sampling_strategy", None) == "group_by_length"
    assert grouped


OLD_FIELDS = frozenset({"output_dir", "evaluation_strategy", "no_cuda", "group_by_length", "seed"})
NEW_FIELDS = frozenset({"output_dir", "eval_strategy", "use_cpu", "train_sampling_strategy", "seed"})


def test_new_names_map_onto_transformers_4_4x_fields():
    out = compat.translate_training_kwargs(
        {"eval_strategy": "no", "use_cpu": True, "group_by_length": True, "seed": 1}, OLD_FIELDS
    )
    assert out == {"evaluation_strategy": "no", "no_cuda": True, "group_by_length": True, "seed": 1}


def test_group_by_length_maps_onto_the_5x_sampling_strategy():
    out = compat.translate_training_kwargs({"group_by_length": True, "eval_strategy": "no"}, NEW_FIELDS)
    assert out == {"train_sampling_strategy": "group_by_length", "eval_strategy": "no"}
    assert compat.translate_training_kwargs({"group_by_length": False}, NEW_FIELDS) == {}


def test_a_removed_field_is_refused_with_the_version():
    import pytest

    with pytest.raises(TypeError, match=rf"transformers {transformers.__version__} has no field 'nope'"):
        compat.translate_training_kwargs({"nope": 1}, NEW_FIELDS)


def test_processing_class_or_tokenizer_keyword_matches_the_trainer():
    import inspect

    kwargs = compat.trainer_processing_kwargs("tok")
    (name,) = kwargs
    assert name in inspect.signature(transformers.Trainer.__init__).parameters
