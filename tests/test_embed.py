"""The embedder on the real all-MiniLM-L6-v2: unit fp16 rows that match encode(), chunking, resumable shards."""

import os
import subprocess
import sys

import numpy as np
import pytest

from crisp_pl.config import EmbedConfig
from crisp_pl.embed import embed_texts, embed_windows, load_embedder, load_embeddings

MEDICAL = [
    "The patient was admitted with chest pain radiating to the left arm and elevated troponin.",
    "Type 2 diabetes is managed with metformin, diet and regular exercise.",
    "A chest X-ray showed a right lower lobe consolidation consistent with pneumonia.",
    "The surgeon removed the inflamed appendix laparoscopically under general anesthesia.",
    "Hypertension increases the risk of stroke, heart failure and chronic kidney disease.",
    "The child presented with fever, a stiff neck and a petechial rash; meningitis was suspected.",
    "Warfarin therapy requires regular monitoring of the INR to avoid bleeding.",
    "MRI of the brain revealed multiple sclerosis plaques in the periventricular white matter.",
]
CODE = [
    "def read_config(path):\n    with open(path) as f:\n        return json.load(f)",
    "for i, item in enumerate(items):\n    if item is None:\n        continue\n    total += item.price",
    "class Stack:\n    def __init__(self):\n        self._items = []\n    def push(self, x):\n        self._items.append(x)",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\nprint(arr.shape)",
    "try:\n    value = int(text)\nexcept ValueError:\n    value = 0",
    "return sorted(records, key=lambda r: r['timestamp'], reverse=True)",
    "if __name__ == '__main__':\n    parser = argparse.ArgumentParser()\n    main(parser.parse_args())",
    "squares = {n: n * n for n in range(10) if n % 2 == 0}",
]
OTHER = [
    "The striker scored twice in the second half to win the cup final.",
    "Preheat the oven to 200 degrees and bake the bread for forty minutes.",
    "The central bank raised interest rates by a quarter of a point on Thursday.",
    "Heavy snow closed the mountain pass for the third day in a row.",
    "The orchestra performed Beethoven's ninth symphony to a sold-out hall.",
    "Parliament passed the budget after a long debate over defence spending.",
    "",  # an empty window still gets a unit embedding
    "ok",
]
TEXTS = MEDICAL + CODE + OTHER

# Words that are exactly one word piece each, so a text of N of them is N pieces (checked below).
MED_WORDS = "patient heart blood disease treatment doctor hospital pain fever infection cancer surgery".split()
CODE_WORDS = "function return value list string integer loop class method variable import module".split()


@pytest.fixture(scope="module")
def model():
    return load_embedder(EmbedConfig(device="cpu"))


def words(vocab: list[str], n: int) -> str:
    return " ".join(vocab[i % len(vocab)] for i in range(n))


def as32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def test_unit_norm_fp16_and_deterministic(model):
    cfg = EmbedConfig(batch_size=7)  # several batches, the last one partial
    emb = embed_texts(TEXTS, cfg, model, progress=False)
    assert emb.shape == (len(TEXTS), 384) and emb.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(as32(emb), axis=1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(emb, embed_texts(TEXTS, cfg, model, progress=False))
    # another batching pads differently: equal up to float rounding, not bit for bit
    np.testing.assert_allclose(as32(emb), as32(embed_texts(TEXTS, EmbedConfig(batch_size=32), model, progress=False)), atol=1e-3)


def test_semantically_sensible(model):
    emb = as32(embed_texts(MEDICAL + CODE, EmbedConfig(), model, progress=False))
    sim = emb @ emb.T
    n = len(MEDICAL)
    for i in range(n):  # on average a medical text is closer to the medical ones than to the code
        assert np.delete(sim[i, :n], i).mean() > sim[i, n:].mean() + 0.05, MEDICAL[i]
    np.fill_diagonal(sim, -1)
    for i in range(n):  # and its nearest neighbour is medical
        assert sim[i].argmax() < n, MEDICAL[i]
    for i in range(n, len(sim)):  # and the same for code
        assert sim[i].argmax() >= n, CODE[i - n]


def test_truncate_matches_encode(model):
    long_text = " ".join(MEDICAL) * 6  # ~600 pieces: both must keep the first 256
    texts = TEXTS + [long_text]
    ours = as32(embed_texts(texts, EmbedConfig(batch_size=8), model, progress=False))
    ref = model.encode(texts, normalize_embeddings=True, batch_size=8)
    assert (ours * ref).sum(1).min() > 0.999


def test_mean_chunks_equals_truncate_on_short_texts(model):
    short = embed_texts(TEXTS, EmbedConfig(long_window="truncate"), model, progress=False)
    chunked = embed_texts(TEXTS, EmbedConfig(long_window="mean_chunks"), model, progress=False)
    np.testing.assert_allclose(as32(chunked), as32(short), atol=1e-3)  # equal up to fp16 rounding


def test_mean_chunks_is_the_mean_of_the_chunks(model):
    part_a, part_b = words(MED_WORDS, 254), words(CODE_WORDS, 254)  # 254 pieces: one chunk each
    assert len(model.tokenizer(part_a + " " + part_b, add_special_tokens=False)["input_ids"]) == 508
    whole = part_a + " " + part_b
    trunc = as32(embed_texts([whole], EmbedConfig(long_window="truncate"), model, progress=False))[0]
    mean = as32(embed_texts([whole], EmbedConfig(long_window="mean_chunks"), model, progress=False))[0]
    a, b = model.encode([part_a, part_b], normalize_embeddings=True)
    expected = (a + b) / np.linalg.norm(a + b)
    assert float(mean @ expected) > 0.999
    assert float(trunc @ a) > 0.999  # truncate sees only the first chunk
    assert float(mean @ trunc) < 0.95


def test_embed_windows_shards_and_resumes(model, tmp_path):
    cfg = EmbedConfig(batch_size=4)
    calls = []

    def texts_fn(start, stop):
        calls.append((start, stop))
        return TEXTS[start:stop]

    n = 10
    paths = embed_windows(texts_fn, n, cfg, tmp_path, shard_size=4, model=model, progress=False)
    assert [p.name for p in paths] == ["emb-00000.npy", "emb-00001.npy", "emb-00002.npy"]
    assert calls == [(0, 4), (4, 8), (8, 10)]
    full = load_embeddings(tmp_path)
    np.testing.assert_allclose(as32(full), as32(embed_texts(TEXTS[:n], cfg, model, progress=False)), atol=1e-3)

    kept = {p.name: os.stat(p).st_mtime_ns for p in paths}
    paths[1].unlink()  # as if the run had been killed while embedding shard 1
    calls.clear()
    embed_windows(texts_fn, n, cfg, tmp_path, shard_size=4, model=model, progress=False)
    assert calls == [(4, 8)]
    assert os.stat(paths[0]).st_mtime_ns == kept["emb-00000.npy"]
    np.testing.assert_array_equal(load_embeddings(tmp_path), full)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)  # no temp files left


def test_single_shard_is_memory_mapped_and_bad_shards_are_reported(model, tmp_path):
    embed_windows(lambda a, b: TEXTS[a:b], 5, EmbedConfig(), tmp_path, model=model, progress=False)
    assert isinstance(load_embeddings(tmp_path), np.memmap)
    with pytest.raises(ValueError, match="shard_size"):  # resuming with another layout is refused
        embed_windows(lambda a, b: TEXTS[a:b], 6, EmbedConfig(), tmp_path, model=model, progress=False)
    with pytest.raises(FileNotFoundError):
        load_embeddings(tmp_path / "missing")


def test_importing_touches_nothing_heavy():
    code = "import sys, crisp_pl.embed, crisp_pl.cluster; print(sorted({'torch', 'sentence_transformers', 'faiss'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
