"""The embedders other than SBERT (`embed.kind`), for the embedding ablation; same output as SBERT's:
unit-norm fp16 rows of EMB_DIM, so the tree, labels and every method read them unchanged.

- `lsi`: latent semantic indexing, TF-IDF (sublinear term frequencies, words seen in at least two pool
  windows) then a truncated SVD to EMB_DIM dimensions, both fitted on the pool's windows alone (the
  specialist pieces are projected with the pool's fit, as SBERT embeds both with one model). Saved as
  plain arrays (vocabulary, idf, components), not a pickle.
- `random`: a control: each text gets a random unit vector seeded by a hash of its content. The tree
  then cuts the pool at random, P(c|Ds) is close to P(c|Dg) and CRISP should do what uniform does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from crisp_pl.embed import EMB_DIM

LSI_MIN_DF = 2


class LSI:
    """A fitted TF-IDF + truncated SVD projection of texts to unit vectors."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, components: np.ndarray):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(sublinear_tf=True, vocabulary=vocabulary, dtype=np.float32)
        self.vectorizer.idf_ = idf
        self.components = components  # (dim, vocabulary)

    @classmethod
    def fit(cls, texts: list[str], seed: int = 0) -> "LSI":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=LSI_MIN_DF, dtype=np.float32)
        tfidf = vectorizer.fit_transform(texts)
        dim = min(EMB_DIM, tfidf.shape[1] - 1, len(texts) - 1)  # a tiny corpus has fewer directions than EMB_DIM
        svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=5, random_state=seed).fit(tfidf)
        vocabulary = {word: int(i) for word, i in vectorizer.vocabulary_.items()}
        return cls(vocabulary, vectorizer.idf_.astype(np.float32), svd.components_.astype(np.float32))

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, EMB_DIM) unit-norm fp16; zero-padded past the fitted dimension; a text with no known word is zero."""
        projected = np.asarray(self.vectorizer.transform(texts) @ self.components.T, dtype=np.float32)
        out = np.zeros((len(texts), EMB_DIM), dtype=np.float32)
        out[:, : projected.shape[1]] = projected
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float16)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocabulary.json").write_text(json.dumps(self.vectorizer.vocabulary))
        np.savez(folder / "lsi.npz", idf=self.vectorizer.idf_, components=self.components)

    @classmethod
    def load(cls, folder: Path) -> "LSI":
        arrays = np.load(folder / "lsi.npz")
        return cls(json.loads((folder / "vocabulary.json").read_text()), arrays["idf"], arrays["components"])


def random_unit_vectors(texts: list[str]) -> np.ndarray:
    """(n, EMB_DIM) unit-norm fp16, one random direction per text, fixed by the text's content."""
    out = np.empty((len(texts), EMB_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")
        out[i] = np.random.default_rng(seed).standard_normal(EMB_DIM)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float16)
