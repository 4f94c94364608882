from fusionbench.text import WordVocab, normalize_caption


def test_normalize_lowercases_and_strips_punctuation():
    assert normalize_caption("A Red circle, left of the BLUE square.") == [
        "a",
        "red",
        "circle",
        "left",
        "of",
        "the",
        "blue",
        "square",
    ]
    assert normalize_caption("It's the dog's 2nd ball!") == ["it's", "the", "dog's", "2nd", "ball"]


def test_build_respects_min_count_and_specials():
    vocab = WordVocab.build(["a red circle", "a blue circle", "a rare word"], min_count=2)
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert "a" in vocab.stoi and "circle" in vocab.stoi and "rare" not in vocab.stoi


def test_encode_decode_round_trip_and_unknowns():
    vocab = WordVocab.build(["a red circle left of a blue square"])
    ids = vocab.encode("A red circle, left of a blue square.")
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == "a red circle left of a blue square"
    assert vocab.decode(vocab.encode("a green circle")) == "a <unk> circle"
    assert len(vocab.encode("a red circle left of", max_len=2)) == 4


def test_save_load_round_trip(tmp_path):
    vocab = WordVocab.build(["two green triangles", "one red disc"])
    vocab.save(tmp_path / "vocab.json")
    loaded = WordVocab.load(tmp_path / "vocab.json")
    assert loaded.itos == vocab.itos
    assert loaded.encode("two red triangles") == vocab.encode("two red triangles")


def test_tokenizer_from_dict_dispatches_on_type():
    from fusionbench.text import tokenizer_from_dict

    vocab = WordVocab.build(["two green triangles"])
    assert tokenizer_from_dict(vocab.to_dict()).itos == vocab.itos
