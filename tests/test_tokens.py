"""`dgspnet.tokens` on CLIP's real vocabulary and tokenizer, and end to end on a saved model: known answers, scenes, and the
warning when the text tower is random."""
import pytest
import torch

from dgspnet.checkpoint import build_model, load_trained, save_trained
from dgspnet.config import config_from_dict
from dgspnet.data import prepare_dataset
from dgspnet.synthetic import make_synthetic_dataset
from dgspnet.text import TextEncoder
from dgspnet.tokens import RANDOM_WORDS_WARNING, nearest_words, plot_token_words, token_words, vocabulary


@pytest.fixture(scope="module")
def vocab():
    return vocabulary(TextEncoder("none"))


def test_vocabulary_words(vocab):
    emb, words, special = vocab
    assert emb.shape == (49408, 512) and len(words) == 49408
    assert [words[i] for i in special] == ["<start_of_text>", "<end_of_text>"]
    assert "sky" in words and "ocean" in words
    # byte-level BPE pieces decoded to the text they stand for: 'íķĺ' is the UTF-8 of 하, '¡' a lone byte of one
    assert [words[i] for i in (2390, 4000, 33992, 40066, 94)] == ["sky", "invol-", "하-", "……", "\\xa1-"]


def test_known_answers(vocab):
    "A token equal to a word's embedding returns that word; a token between two words ranks both on top."
    emb, words, special = vocab
    sky, ocean = words.index("sky"), words.index("ocean")
    (first, cos), = nearest_words(emb[sky], emb, words, 1, special)[0]
    assert first == "sky" and cos == pytest.approx(1.0, abs=1e-5)
    assert {w for w, _ in nearest_words((emb[sky] + emb[ocean]) / 2, emb, words, 2, special)[0]} == {"sky", "ocean"}
    assert all(w not in ("<start_of_text>", "<end_of_text>") for w, _ in nearest_words(emb[special[0]], emb, words, 3, special)[0])


def tiny_model(tmp_path, n_fine_tokens=2):
    make_synthetic_dataset(tmp_path / "ds", n_train=4, n_test=6, size=64, seed=1)
    man = prepare_dataset(tmp_path / "ds", tmp_path / "prep")
    cfg = config_from_dict({"model": {"widths": [8, 16, 32, 64, 128], "clip_weights": "none", "n_fine_tokens": n_fine_tokens}})
    torch.manual_seed(0)
    save_trained(build_model(cfg), cfg, {"mean": 0.0, "std": 1.0}, tmp_path / "model.pt")
    return load_trained(tmp_path / "model.pt"), man


def test_trained_model_random_tower(tmp_path):
    trained, man = tiny_model(tmp_path)
    tw = token_words(trained, man, k=3)
    assert tw.text_tower_random and tw.note.startswith(RANDOM_WORDS_WARNING) and tw.n_images == 6
    assert list(tw.overall.index) == ["s1*", "s2*"]
    assert set(tw.overall["text tower"]) == {"RANDOM: these words mean nothing"}
    scenes = set(tw.per_scene.index.get_level_values("scene"))
    assert scenes and scenes <= {"sky", "ground", "ocean"}
    assert tw.per_scene["images"].groupby(level="scene").first().sum() == 6
    fig = plot_token_words(tw)
    assert fig._suptitle.get_text().startswith("RANDOM text tower: these words mean nothing.\n")


def test_no_fine_tokens(tmp_path):
    trained, man = tiny_model(tmp_path, n_fine_tokens=0)
    with pytest.raises(ValueError, match="no fine tokens"): token_words(trained, man)
