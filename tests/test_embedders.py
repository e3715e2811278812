"""The embedding ablation's embedders (`embed.kind`): LSI fitted on the pool, and the random control."""

import numpy as np
import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config, to_dict
from crisp_pl.corpus.builtin import BUILTIN_SOURCES
from crisp_pl.embed import EMB_DIM
from crisp_pl.embedders import LSI, random_unit_vectors
from crisp_pl.sampling import Groups, draw
from crisp_pl.stages import prepare, selection_stage


def texts_of(source: str, n: int) -> list[str]:
    return [doc.text[:1500] for doc, _ in zip(BUILTIN_SOURCES[source](), range(n))]


def test_lsi_puts_texts_of_one_domain_closer_and_round_trips(tmp_path):
    medical, code = texts_of("medical", 150), texts_of("python_stdlib", 30)
    lsi = LSI.fit(medical[:100] + code[:20])
    vectors = lsi.encode(medical[100:] + code[20:])  # held-out texts, projected with the fit
    assert vectors.shape == (60, EMB_DIM) and vectors.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    cos = vectors.astype(np.float32) @ vectors.astype(np.float32).T
    within, across = cos[:50, :50][np.triu_indices(50, 1)].mean(), cos[:50, 50:].mean()
    assert within > across + 0.1, (within, across)
    lsi.save(tmp_path / "lsi")
    np.testing.assert_array_equal(LSI.load(tmp_path / "lsi").encode(medical[:5]), lsi.encode(medical[:5]))


def test_random_vectors_are_fixed_by_the_text_and_unrelated_to_it():
    texts = texts_of("medical", 200)
    vectors = random_unit_vectors(texts).astype(np.float32)
    np.testing.assert_array_equal(random_unit_vectors(texts[:3]), random_unit_vectors(texts[:3]))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    assert abs((vectors @ vectors.T)[np.triu_indices(200, 1)].mean()) < 0.01  # no shared direction, unlike any real embedder


@pytest.mark.parametrize("kind", ["lsi", "random"])
def test_crisp_on_each_embedder(kind, tiny_config):
    """LSI's clusters still find the medical domain; random clusters give back the pool's own mix (the control)."""
    cfg = build_run_config(to_dict(tiny_config), {"embed": {"kind": kind}, "selection": {"method": "crisp"}})
    cache = StageCache(f"{cfg.results_dir}/cache")
    prepared = prepare(cache, cfg, need_clusters=True)
    assert prepared.keys["pool_embeddings"] != prepared.keys["tree"]
    groups = Groups.load(selection_stage(cache, cfg, prepared).path)
    is_medical = prepared.stores.pool.domains == "medical"
    share = is_medical[draw(groups, seed=0, rank=0, start=0, stop=20_000)].mean()
    if kind == "lsi":
        assert share > is_medical.mean() + 0.2, (share, is_medical.mean())
    else:
        assert abs(share - is_medical.mean()) < 0.1, (share, is_medical.mean())
