"""The filter baselines (classifier, CED, DSIR) on the real tiny dataset.

The pool mixes medical windows (~41%) with encyclopedic and code ones and the specialist set is
medical, so a working filter keeps mostly medical windows. Every method runs its real parts: SBERT
embeddings + torch L-BFGS, two micro GPTs trained by a Lightning Trainer, the data-selection package.
"""

import numpy as np
import pytest

from crisp_pl.config import AuxLMConfig, ClassifierConfig, DSIRConfig
from crisp_pl.embed import load_embeddings
from crisp_pl.model.gpt import GPT, GPTConfig
from crisp_pl.selection.ced import ced_groups
from crisp_pl.selection.classifier import classifier_groups
from crisp_pl.selection.dsir import dsir_groups, wordpunct_tokenize
from crisp_pl.selection.filtering import kept_count

KEEP = 0.2
INFO_KEYS = {"kept_windows", "keep_fraction", "aux_flops", "aux_seconds"}
# Tiny CED: 8 steps of 4 windows per LM, 100 pool windows scored (scoring dominates on a CPU).
CED = AuxLMConfig(size="micro", steps=8, batch_size=4, lr=2e-3, warmup_steps=2, max_score_windows=100)


@pytest.fixture(scope="module")
def data(tiny_prepared):
    stores = tiny_prepared.stores
    return {
        "pool": stores["pool"],
        "train": stores["train"],
        "validation": stores["validation"],
        "pool_emb": load_embeddings(tiny_prepared.embeddings["pool"].path),
        "train_emb": load_embeddings(tiny_prepared.embeddings["train"].path),
        "medical": stores["pool"].domains == "medical",
    }


@pytest.fixture(scope="module")
def classifier_run(data):
    return classifier_groups(data["pool_emb"], data["train_emb"], ClassifierConfig(), KEEP, seed=0)


@pytest.fixture(scope="module")
def ced_run(data, tmp_path_factory):
    validation = data["validation"].subset(np.arange(16))  # enough to compare the two LMs
    return ced_groups(data["pool"], data["train"], CED, KEEP, seed=0, work_dir=tmp_path_factory.mktemp("ced"),
                      validation_store=validation)


@pytest.fixture(scope="module")
def dsir_run(data, tmp_path_factory):
    work = tmp_path_factory.mktemp("dsir")
    return dsir_groups(data["pool"], data["train"], DSIRConfig(num_proc=2), KEEP, seed=0, work_dir=work), work


def check_filter(groups, scores, candidates: np.ndarray, n_pool: int) -> np.ndarray:
    """The contract every filter meets; returns the kept windows."""
    k = round(KEEP * len(candidates))
    assert groups.store == "pool" and groups.num_groups == 1
    np.testing.assert_array_equal(groups.offsets, [0, k])
    np.testing.assert_array_equal(groups.weights, [1.0])
    kept = groups.members
    assert len(np.unique(kept)) == k and (np.diff(kept) > 0).all()  # unique and sorted
    assert np.isin(kept, candidates).all()
    assert scores.shape == (n_pool,)
    assert INFO_KEYS <= set(groups.info) and all(isinstance(v, float) for v in groups.info.values())
    assert groups.info["kept_windows"] == k and groups.info["keep_fraction"] == pytest.approx(k / len(candidates))
    assert groups.info["aux_seconds"] > 0
    return kept


def medical_share(data, kept: np.ndarray) -> float:
    return float(data["medical"][kept].mean())


def test_kept_count_rounds_and_refuses_an_empty_selection():
    assert kept_count(0.2, 732) == 146
    assert kept_count(1.0, 5) == 5
    assert kept_count(0.5, 5) == 2  # round half to even
    with pytest.raises(ValueError, match="keeps round"):
        kept_count(0.001, 100)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        kept_count(0.0, 100)


def test_base_rate_of_the_tiny_pool(data):
    assert 0.35 < data["medical"].mean() < 0.47  # what the thresholds below are measured against


def test_classifier_keeps_the_top_logits_and_they_are_medical(data, classifier_run):
    groups, scores = classifier_run
    n = len(data["pool"])
    kept = check_filter(groups, scores, np.arange(n), n)
    others = np.setdiff1d(np.arange(n), kept)
    assert scores[kept].min() >= scores[others].max()  # a top-k, by the returned scores
    assert medical_share(data, kept) >= 0.9, medical_share(data, kept)  # measured 1.0
    info = groups.info
    assert info["positives"] == len(data["train_emb"]) and info["negatives"] == n  # one positive per specialist piece; max_negatives > pool
    assert info["heldout_auc"] > 0.7 and info["aux_flops"] > 0  # held-out AUC measured 0.86


def test_classifier_is_seeded(data, classifier_run):
    again, scores = classifier_groups(data["pool_emb"], data["train_emb"], ClassifierConfig(), KEEP, seed=0)
    np.testing.assert_array_equal(again.members, classifier_run[0].members)
    np.testing.assert_array_equal(scores, classifier_run[1])
    # The seed picks the negatives, which matters once they are a sample of the pool.
    few = ClassifierConfig(max_negatives=300)
    a, b = (classifier_groups(data["pool_emb"], data["train_emb"], few, KEEP, seed=s)[1] for s in (0, 1))
    assert not np.array_equal(a, b)


def test_ced_keeps_windows_the_specialist_lm_prefers(data, ced_run):
    groups, scores = ced_run
    n = len(data["pool"])
    candidates = np.flatnonzero(~np.isnan(scores))  # the seeded max_score_windows subset
    assert len(candidates) == CED.max_score_windows
    kept = check_filter(groups, scores, candidates, n)
    assert scores[kept].min() >= scores[np.setdiff1d(candidates, kept)].max()
    share, base = medical_share(data, kept), data["medical"][candidates].mean()
    assert share >= 0.75 and share > base + 0.25, (share, base)
    info = groups.info
    assert info["specialist_lm_val_loss"] < info["generalist_lm_val_loss"]  # it did specialize
    # Two LMs trained steps * batch windows of L - 1 predicted tokens, then a forward pass (1/3 of
    # the training FLOPs per token) of both over every scored window.
    per_token = GPT(GPTConfig.from_name(CED.size, block_size=64)).flops_per_token(63)
    train = 2 * CED.steps * CED.batch_size * 63 * per_token
    score = 2 * len(candidates) * 63 * per_token / 3
    assert info["aux_flops"] == pytest.approx(train + score)


def test_ced_is_seeded(data, tmp_path):
    cfg = AuxLMConfig(size="micro", steps=2, batch_size=2, warmup_steps=1, max_score_windows=10)
    runs = [ced_groups(data["pool"], data["train"], cfg, 0.5, seed=3, work_dir=tmp_path / str(i)) for i in range(2)]
    np.testing.assert_array_equal(runs[0][0].members, runs[1][0].members)
    np.testing.assert_array_equal(runs[0][1], runs[1][1])  # NaN where unscored, equal elsewhere
    assert not list(tmp_path.glob("*/**/*.ckpt"))  # no checkpoints written


def test_dsir_resamples_medical_windows(data, dsir_run):
    (groups, log_weights), work = dsir_run
    n = len(data["pool"])
    kept = check_filter(groups, log_weights, np.arange(n), n)
    assert np.isfinite(log_weights).all()
    assert medical_share(data, kept) >= 0.85, medical_share(data, kept)  # measured 0.97
    assert log_weights[kept].mean() > log_weights.mean()
    assert groups.info["aux_flops"] == 0.0  # CPU hashing
    assert not any(work.iterdir())  # the jsonl files and the package's cache are removed


def test_dsir_is_seeded_and_its_weights_do_not_depend_on_num_proc(data, dsir_run, tmp_path):
    (groups, log_weights), _ = dsir_run
    one = DSIRConfig(num_proc=1)
    again, weights = dsir_groups(data["pool"], data["train"], one, KEEP, seed=0, work_dir=tmp_path / "a")
    # Line order restored from the package's virtual shards: one process gives the same weights.
    np.testing.assert_allclose(weights, log_weights, rtol=1e-6)
    np.testing.assert_array_equal(again.members, groups.members)
    other, _ = dsir_groups(data["pool"], data["train"], one, KEEP, seed=1, work_dir=tmp_path / "b")
    assert not np.array_equal(other.members, groups.members)  # the Gumbel noise follows the seed


def test_wordpunct_matches_nltk(data):
    from nltk.tokenize import WordPunctTokenizer

    nltk_tokenizer = WordPunctTokenizer()  # a fresh one: the package's shared instance is never touched
    for text in data["pool"].texts(np.arange(0, len(data["pool"]), 7)):
        assert wordpunct_tokenize(text.lower()) == nltk_tokenizer.tokenize(text.lower())


def test_bad_input_raises(data, tmp_path):
    empty = data["train"].subset(np.arange(0))
    with pytest.raises(ValueError, match="specialist set is empty"):
        classifier_groups(data["pool_emb"], data["train_emb"][:0], ClassifierConfig(), KEEP, seed=0)
    with pytest.raises(ValueError, match="specialist set is empty"):
        ced_groups(data["pool"], empty, CED, KEEP, seed=0, work_dir=tmp_path)
    with pytest.raises(ValueError, match="specialist set is empty"):
        dsir_groups(data["pool"], empty, DSIRConfig(), KEEP, seed=0, work_dir=tmp_path)
    with pytest.raises(ValueError, match="keeps round"):
        classifier_groups(data["pool_emb"], data["train_emb"], ClassifierConfig(), 1e-4, seed=0)
    with pytest.raises(ValueError, match="keeps round"):  # 0.2 of 2 scored windows
        ced_groups(data["pool"], data["train"], AuxLMConfig(max_score_windows=2), KEEP, seed=0, work_dir=tmp_path)
    with pytest.raises(ValueError, match="keeps round"):
        dsir_groups(data["pool"], data["train"], DSIRConfig(), 1e-4, seed=0, work_dir=tmp_path)


def test_ced_scratch_and_disjoint_generalist(data, tmp_path):
    cfg = AuxLMConfig(size="micro", steps=2, batch_size=2, warmup_steps=1)
    n = len(data["pool"])
    groups, scores = ced_groups(data["pool"], data["train"], cfg, 0.5, seed=0, work_dir=tmp_path / "d",
                                disjoint_generalist=True)
    scored = np.flatnonzero(~np.isnan(scores))
    assert len(scored) == n // 2 and groups.info["generalist_lm_windows"] == n - n // 2  # scored and trained-on are disjoint
    scratch, _ = ced_groups(data["pool"], data["train"], cfg, 0.5, seed=0, work_dir=tmp_path / "s", specialist_lm="scratch")
    finetuned, _ = ced_groups(data["pool"], data["train"], cfg, 0.5, seed=0, work_dir=tmp_path / "f")
    assert scratch.info["generalist_lm_windows"] == n and not np.array_equal(scratch.members, finetuned.members)
    with pytest.raises(ValueError, match="finetune` or `scratch"):
        ced_groups(data["pool"], data["train"], cfg, 0.5, seed=0, work_dir=tmp_path, specialist_lm="warm")
