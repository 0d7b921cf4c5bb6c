import pytest

from harness.models import BUILTIN_CONFIGS, CheckpointError, describe, load_model, load_tokenizer, resolve

# Parameter counts of the published sequence-classification models (2 labels).
PUBLISHED = {
    "bert-base-uncased": 109_483_778,
    "distilbert-base-uncased": 66_955_010,
    "roberta-base": 124_647_170,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_builtin_configs_build_the_published_architectures_offline(name):
    model, info = load_model(name, weights="random", num_labels=2)
    assert info["checkpoint_source"] == "builtin" and info["weights"] == "random" and info["attn_implementation"]
    assert describe(model)["parameters"] == PUBLISHED[name]


def test_bert_base_shape_for_flops():
    model, _ = load_model("bert-base-uncased", weights="random", num_labels=2)
    shape = describe(model)
    assert shape["num_layers"] == 12 and shape["hidden_size"] == 768
    # 109.48 M in all; the embeddings are 23.84 M of it.
    assert shape["parameters"] - shape["non_embedding_parameters"] == 23_837_184


def test_org_prefixed_hub_ids_share_the_builtin_config():
    assert BUILTIN_CONFIGS["google-bert/bert-base-uncased"] == BUILTIN_CONFIGS["bert-base-uncased"]


def test_offline_alias_resolves_to_the_packaged_minilm(minilm_dir):
    resolved = resolve("all-MiniLM-L6-v2")
    assert resolved.location == str(minilm_dir) and resolved.source.startswith("package:")
    assert len(load_tokenizer("all-MiniLM-L6-v2")) == 30522  # bert-base-uncased's vocabulary


def test_local_folder_and_pretrained_weights(tiny_bert_dir):
    model, info = load_model(str(tiny_bert_dir), weights="pretrained", num_labels=2)
    assert info["checkpoint_source"] == "local" and describe(model)["num_layers"] == 2


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        resolve(str(tmp_path))


def test_missing_path_is_refused():
    with pytest.raises(CheckpointError, match="looks like a path, but no such folder exists"):
        resolve("./no/such/model")


def test_unknown_checkpoint_offline_says_what_a_checkpoint_can_be():
    with pytest.raises(CheckpointError) as info:
        load_model("no-such-org/no-such-model", weights="pretrained", num_labels=2)
    message = str(info.value)
    assert "no-such-org/no-such-model" in message and "local folder" in message and "all-MiniLM-L6-v2" in message


def test_the_attention_implementation_is_an_axis(tiny_bert_dir):
    _, info = load_model(str(tiny_bert_dir), weights="pretrained", num_labels=2, attn_implementation="eager")
    assert info["attn_implementation"] == "eager"
