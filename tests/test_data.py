import builtins

import pytest

from harness.data import DataError, clear_caches, load_task, read_glue_pairs, tokenize_task


def test_real_mrpc_reads_every_row_despite_unbalanced_quotes(glue_dir):
    clear_caches()
    data = load_task("mrpc", glue_dir)
    assert (len(data.train), len(data.validation)) == (3668, 408)
    assert sum(p.label for p in data.train) == 2474
    assert sum(p.label for p in data.validation) == 279
    assert data.majority_rate == pytest.approx(279 / 408)
    # Sentences with a lone double quote stay whole instead of swallowing the next rows.
    lone = [p for p in data.validation if p.text_b.count('"') % 2 == 1 or p.text_a.count('"') % 2 == 1]
    assert lone, "MRPC dev has sentences with unbalanced quotes"
    assert all("\t" not in p.text_a and "\n" not in p.text_b for p in lone)
    assert data.source.startswith("GLUE_DIR:")


def test_glue_dir_never_touches_the_hub(glue_dir, monkeypatch):
    clear_caches()
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise AssertionError("the datasets package (and the hub) was reached with GLUE_DIR set")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    assert len(load_task("mrpc", glue_dir).train) == 3668


def test_malformed_tsv_names_file_and_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tonly four\n")
    with pytest.raises(DataError, match=r"train.tsv:2: expected 5 tab-separated columns, got 4"):
        read_glue_pairs(path)


def test_missing_task_folder_says_what_layout_is_expected(tmp_path):
    clear_caches()
    with pytest.raises(DataError, match=r"no MRPC/ folder .*\(MRPC/train.tsv"):
        load_task("mrpc", tmp_path)


def test_truncated_split_is_caught(tmp_path, glue_dir):
    folder = tmp_path / "MRPC"
    folder.mkdir()
    lines = (glue_dir / "MRPC" / "train.tsv").read_text(encoding="utf-8-sig").splitlines()
    (folder / "train.tsv").write_text("\n".join(lines[:100]) + "\n")
    (folder / "dev.tsv").write_text((glue_dir / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig"))
    clear_caches()
    with pytest.raises(DataError, match="read 99 train and 408 validation rows, expected 3668 and 408"):
        load_task("mrpc", tmp_path)


def test_unknown_task_is_refused():
    with pytest.raises(DataError, match="unknown task 'sst9'"):
        load_task("sst9")


def test_tokenization_is_done_once_per_key(glue_dir, tokenizer):
    clear_caches()
    data = load_task("mrpc", glue_dir)
    a = tokenize_task(data, tokenizer, pad_to_max_length=False, max_length=128)
    b = tokenize_task(data, tokenizer, pad_to_max_length=False, max_length=128)
    c = tokenize_task(data, tokenizer, pad_to_max_length=True, max_length=128)
    assert a is b and a is not c
    assert max(a.train.lengths) <= 128 and min(a.train.lengths) < 128
    assert set(c.train.lengths) == {128}
    # Same real tokens, whatever the padding.
    real = sum(sum(f["attention_mask"]) for f in a.train.features)
    assert sum(sum(f["attention_mask"]) for f in c.train.features) == real


def test_the_token_cache_is_data_a_planted_file_cannot_run_code(glue_dir, minilm_dir, tmp_path, monkeypatch):
    """HARNESS_CACHE_DIR may be a restored CI cache: what is read there is JSON of integers,
    checked, and anything else (a pickle, a malformed file) is ignored and written again.
    (A fresh tokenizer each time, as each cell's child has: a used one keys the cache anew.)"""
    import json
    import pickle

    from transformers import AutoTokenizer

    def tokenized():
        clear_caches()
        fresh = AutoTokenizer.from_pretrained(minilm_dir)
        return tokenize_task(load_task("mrpc", glue_dir), fresh, pad_to_max_length=False, max_length=128)

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    first = tokenized()
    (cached,) = (tmp_path / "tokenized").glob("*.json")
    stored = json.loads(cached.read_text())
    assert stored["format"] == 1 and stored["train"][0] == first.train.features[0]

    class Boom:  # what a planted pickle would run on load
        def __reduce__(self):
            return (exec, ("raise SystemExit('code from the cache ran')",))

    cached.write_bytes(pickle.dumps(Boom()))
    assert tokenized().train.features == first.train.features, "tokenized again, not loaded"
    assert json.loads(cached.read_text())["format"] == 1, "and the cache written back as data"
    cached.write_text(json.dumps({"format": 1, "train": [{"input_ids": ["os.system"]}], "validation": []}))
    assert tokenized().train.features == first.train.features
