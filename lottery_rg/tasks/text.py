"""Text data for the masked-language-model (BERT) lottery runs.

Two paths go through the same functions:

* **Offline default.** The machine that runs the demo and the tests has no network, so the
  default corpus is English prose that ships with Python itself: the language-reference
  topics of :mod:`pydoc_data.topics` plus the docstrings of a fixed list of standard-library
  modules (:func:`embedded_text_dataset`). A WordPiece tokenizer is trained on it
  (:func:`train_tokenizer`, cached on disk by :func:`embedded_tokenizer`) and a small BERT
  is trained from scratch (:func:`small_bert_config`).
* **Real use.** Users pass any BERT checkpoint (``from_pretrained``) and any text data set
  (``datasets.load_dataset`` by name, or local ``.txt``/``.csv``/``.json`` files), exactly as
  transformers' ``run_mlm.py`` does (:func:`load_text_datasets`).

Either way :func:`prepare_mlm_datasets` tokenizes the text and groups it into blocks of
``max_seq_length`` tokens for ``DataCollatorForLanguageModeling``, after
:func:`check_mlm_compatibility` has rejected a model/tokenizer/length combination that would
only fail deep inside training; :func:`compute_mlm_metrics` and :func:`preprocess_logits_for_metrics`
serve ``Trainer`` evaluation (the BERT family adds the perplexity, :func:`lottery_rg.models.bert.perplexity`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "EMBEDDED_MODULES", "SPECIAL_TOKENS", "embedded_paragraphs", "embedded_corpus_stats", "embedded_text_dataset",
    "train_tokenizer", "embedded_tokenizer", "default_cache_dir", "small_bert_config",
    "load_text_datasets", "select_text_column", "check_mlm_compatibility", "prepare_mlm_datasets",
    "preprocess_logits_for_metrics", "compute_mlm_metrics", "masked_token_accuracy",
    "majority_token_accuracy",
]

# Bump when the corpus recipe below changes, so cached tokenizers trained on an older corpus are not reused.
CORPUS_VERSION = 1

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Standard-library modules whose docstrings form part of the embedded corpus. A fixed, sorted list (not a
# walk of sys.modules or pkgutil) so the corpus does not depend on what else happens to be imported; every
# entry imports quickly, without side effects and without a deprecation warning. Modules missing from a
# Python build (e.g. no _ssl, _sqlite3 or _lzma) are skipped.
EMBEDDED_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "asyncio.events", "asyncio.futures", "asyncio.locks",
    "asyncio.queues", "asyncio.streams", "asyncio.subprocess", "asyncio.tasks", "base64", "bdb", "binascii",
    "bisect", "builtins", "bz2", "calendar", "cmath", "cmd", "code", "codecs", "codeop", "collections",
    "collections.abc", "colorsys", "compileall", "concurrent.futures", "configparser", "contextlib",
    "contextvars", "copy", "copyreg", "csv", "ctypes", "dataclasses", "datetime", "dbm", "decimal", "difflib",
    "dis", "doctest", "email", "email.charset", "email.contentmanager", "email.feedparser", "email.generator",
    "email.header", "email.headerregistry", "email.message", "email.parser", "email.policy", "email.utils",
    "enum", "errno", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "gc", "getopt",
    "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http",
    "http.client", "http.cookiejar", "http.cookies", "http.server", "imaplib", "importlib",
    "importlib.abc", "importlib.machinery", "importlib.metadata", "importlib.resources", "importlib.util",
    "inspect", "io", "ipaddress", "itertools", "json", "json.decoder", "json.encoder", "keyword", "linecache",
    "locale", "logging", "logging.config", "logging.handlers", "lzma", "mailbox", "marshal", "math",
    "mimetypes", "modulefinder", "multiprocessing", "multiprocessing.connection", "multiprocessing.managers",
    "multiprocessing.pool", "multiprocessing.process", "multiprocessing.queues", "multiprocessing.shared_memory",
    "multiprocessing.synchronize", "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pdb",
    "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib", "posixpath", "pprint", "profile",
    "pstats", "py_compile", "pyclbr", "pydoc", "queue", "quopri", "random", "re", "reprlib", "rlcompleter",
    "runpy", "sched", "secrets", "select", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib",
    "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics", "string", "stringprep", "struct",
    "subprocess", "symtable", "sys", "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap", "threading",
    "time", "timeit", "token", "tokenize", "tomllib", "trace", "traceback", "tracemalloc", "types", "typing",
    "unicodedata", "unittest", "unittest.case", "unittest.loader", "unittest.mock", "unittest.result",
    "unittest.runner", "unittest.suite", "urllib.error", "urllib.parse", "urllib.request",
    "urllib.response", "urllib.robotparser", "uuid", "warnings", "wave", "weakref", "wsgiref",
    "wsgiref.handlers", "wsgiref.headers", "wsgiref.simple_server", "wsgiref.util", "wsgiref.validate",
    "xml.dom", "xml.dom.minidom", "xml.dom.pulldom", "xml.etree.ElementTree", "xml.sax", "xml.sax.handler",
    "xml.sax.saxutils", "xmlrpc.client", "xmlrpc.server", "zipapp", "zipfile", "zipimport", "zlib", "zoneinfo",
)

_UNDERLINE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")  # reST heading underline
_TABLE = re.compile(r"^\s*[+|]")  # reST grid table row or border
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}([^\s*][^*]*?)\*{1,2}(?![\w*])")
_FOOTNOTE = re.compile(r"\s\[\d+\]")
_WORD = re.compile(r"^[(\"']?[A-Za-z][a-z]*(?:'[a-z]+)?[)\"']?[.,;:!?]?[)\"']?$")
_CODE_CHARS = set("=()[]{}<>_\\|#@$%^~/`")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:(?=\S)")  # Sphinx roles such as :func: or :py:class:
_BULLET = re.compile(r"^(?:[*\-+\u2022]|\(?\d{1,2}[.)])\s+")  # "* item", "- item", "2. item", "(3) item"
_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                             "\u2014": " - ", "\u2026": "...", "\u00a0": " "})


# ---------------------------------------------------------------------------------------------------------------
# The embedded corpus
# ---------------------------------------------------------------------------------------------------------------


def _module_docstrings(module) -> list[str]:
    """Docstrings of a module and of the public classes, methods and functions it defines itself.

    Objects are taken only where ``__module__`` names this module, so re-exports are not collected twice;
    names are visited in sorted order.
    """
    docs = [module.__doc__]
    name = module.__name__
    for attr in sorted(vars(module)):
        if attr.startswith("_"):
            continue
        obj = vars(module)[attr]
        if not (inspect.isclass(obj) or inspect.isroutine(obj)) or getattr(obj, "__module__", None) != name:
            continue
        docs.append(obj.__doc__)
        if inspect.isclass(obj):
            for member_name in sorted(vars(obj)):
                if member_name.startswith("_"):
                    continue
                member = vars(obj)[member_name]
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isroutine(member) or isinstance(member, property):
                    docs.append(member.__doc__)
    return [d for d in docs if isinstance(d, str) and d.strip()]


def _is_prose(paragraph: str, min_chars: int) -> bool:
    """Keep a paragraph only if it reads as English sentences rather than code, a signature or a table."""
    if len(paragraph) < min_chars or "--" in paragraph[:3] or ">>>" in paragraph or "::" in paragraph:
        return False
    words = paragraph.split()
    if len(words) < 8:
        return False
    if sum(c in _CODE_CHARS for c in paragraph) > 0.05 * len(paragraph):
        return False
    if sum(bool(_WORD.match(w)) for w in words) < 0.7 * len(words):
        return False
    if not any(c in paragraph for c in ".!?"):
        return False
    if sum(not c.isascii() for c in paragraph) > 0.01 * len(paragraph):
        return False
    return True


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """Split a paragraph longer than ``max_chars`` at sentence boundaries (a sentence is never cut)."""
    if len(paragraph) <= max_chars:
        return [paragraph]
    pieces, current = [], ""
    for sentence in _SENTENCE_END.split(paragraph):
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


def _paragraphs(text: str, min_chars: int, max_chars: int) -> list[str]:
    """Blank-line separated paragraphs of a reST-ish text, unwrapped onto one line each.

    A paragraph whose first line is indented (a code example or an argument description), or that contains
    a heading underline or a table row, is dropped; emphasis markers, backticks and footnote marks are removed.
    """
    out = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines = block.split("\n")
        if not lines or lines[0][:1].isspace() or any(_UNDERLINE.match(x) or _TABLE.match(x) for x in lines):
            continue
        p = " ".join(x.strip() for x in lines).translate(_TYPOGRAPHY)
        p = _BULLET.sub("", p)
        p = _EMPHASIS.sub(r"\1", _ROLE.sub("", p).replace("`", ""))
        p = _FOOTNOTE.sub("", p)
        p = re.sub(r"\s+", " ", p).strip()
        out.extend(piece for piece in _split_long(p, max_chars) if _is_prose(piece, min_chars))
    return out


def _import_quietly(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except Exception:  # a module this Python build lacks (no _ssl, _lzma, ...) is simply skipped
            return None


def _collect_paragraphs(min_chars: int, max_chars: int) -> list[str]:
    """Build the corpus in this process (see :func:`embedded_paragraphs`, which runs this in a clean one)."""
    from pydoc_data.topics import topics

    texts = [topics[key] for key in sorted(topics)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. typing.io's deprecation warning on attribute access
        for name in EMBEDDED_MODULES:
            module = _import_quietly(name)
            if module is not None:
                texts.extend(_module_docstrings(module))
    seen, out = set(), []
    for text in texts:
        for p in _paragraphs(text, min_chars, max_chars):
            key = p.lower()
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


# Loads this file on its own (it imports only the standard library at module level) and prints the corpus.
_CHILD = (
    "import importlib.util as u, json, sys\n"
    "spec = u.spec_from_file_location('_lottery_rg_text_data', sys.argv[1])\n"
    "m = u.module_from_spec(spec); spec.loader.exec_module(m)\n"
    "sys.stdout.write(json.dumps(m._collect_paragraphs(int(sys.argv[2]), int(sys.argv[3]))))\n"
)


@functools.lru_cache(maxsize=8)
def embedded_paragraphs(min_chars: int = 60, max_chars: int = 1200) -> tuple[str, ...]:
    """Deduplicated English paragraphs from the running Python's own documentation, in a fixed order.

    The language-reference topics (:mod:`pydoc_data.topics`, sorted by topic) come first, then the docstrings
    of :data:`EMBEDDED_MODULES` in list order. They are collected in a fresh, isolated interpreter
    (``python -I -S``: no site-packages, no environment), because libraries patch standard-library classes
    at import time (transformers adds methods to ``logging.Logger``, for one) and the corpus must depend only
    on the Python version, not on what this process has imported; that also keeps ~200 module imports out
    of this process. Cached per process; falls back to collecting in-process if no interpreter can be run.
    """
    import json
    import subprocess

    if sys.executable:
        try:
            result = subprocess.run(
                [sys.executable, "-I", "-S", "-c", _CHILD, os.path.abspath(__file__), str(min_chars), str(max_chars)],
                capture_output=True, text=True, encoding="utf-8", timeout=600, check=True,
            )
            return tuple(json.loads(result.stdout))
        except (OSError, subprocess.SubprocessError, ValueError) as err:
            detail = (getattr(err, "stderr", None) or "").strip()[-500:]
            warnings.warn(f"collecting the embedded corpus in this process instead of a clean one: {err} {detail}",
                          stacklevel=2)
    return tuple(_collect_paragraphs(min_chars, max_chars))


def embedded_corpus_stats(min_chars: int = 60) -> dict[str, int]:
    """Size of the embedded corpus: paragraphs, characters and whitespace-separated words."""
    paragraphs = embedded_paragraphs(min_chars)
    return {
        "paragraphs": len(paragraphs),
        "characters": sum(len(p) for p in paragraphs),
        "words": sum(len(p.split()) for p in paragraphs),
    }


def embedded_text_dataset(test_fraction: float = 0.1, seed: int = 0, min_chars: int = 60):
    """The embedded corpus as a ``DatasetDict`` with "train" and "test" splits and one "text" column.

    This is what runs when no data set is given: it needs no network and no download, and is the same on
    every machine with the same Python. Paragraphs (deduplicated) are the unit of the split, so no paragraph
    is in both splits.
    """
    import datasets

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    full = datasets.Dataset.from_dict({"text": list(embedded_paragraphs(min_chars))})
    split = full.train_test_split(test_size=test_fraction, seed=seed, shuffle=True)
    return datasets.DatasetDict({"train": split["train"], "test": split["test"]})


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8192,
    save_dir: str | os.PathLike | None = None,
    *,
    min_frequency: int = 2,
    model_max_length: int = 512,
):
    """Train an uncased BERT WordPiece tokenizer on ``texts`` and wrap it as a ``BertTokenizerFast``.

    A from-scratch BERT needs a vocabulary that fits its corpus (no pretrained vocabulary can be downloaded
    here). The pipeline is BERT's: lower-casing ``BertNormalizer``, ``BertPreTokenizer``, WordPiece with
    ``##`` continuations, [PAD] [UNK] [CLS] [SEP] [MASK] as ids 0-4 and the "[CLS] A [SEP] (B [SEP])"
    post-processor, so ``AutoTokenizer.from_pretrained`` of the saved directory gives back the same tokenizer.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    backend.train_from_iterator(texts, trainer=trainer)
    # BertTokenizerFast rebuilds exactly this normalizer / pre-tokenizer / decoder and adds BERT's
    # post-processor around the trained vocabulary.
    tokenizer = BertTokenizerFast(vocab=backend.get_vocab(), do_lower_case=True, model_max_length=model_max_length)
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def default_cache_dir() -> Path:
    """``$LOTTERY_RG_CACHE`` if set, else ``~/.cache/lottery_rg``."""
    env = os.environ.get("LOTTERY_RG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lottery_rg"


def embedded_tokenizer(cache_dir: str | os.PathLike | None = None, vocab_size: int = 8192):
    """The tokenizer trained on the embedded corpus, trained once and then loaded from an on-disk cache.

    Training takes seconds, loading milliseconds, and every IMP level and test wants the same vocabulary.
    The cache entry is keyed by the Python version (the corpus depends on it), the vocabulary size and the
    corpus recipe version; it is written to a temporary directory and renamed into place, so a concurrent
    or interrupted run never leaves a half-written tokenizer behind, and processes racing to create it all
    end up with the one that landed. Call it on the main process first in a multi-process launch anyway,
    to train once.
    """
    from transformers import BertTokenizerFast

    shipped = Path(__file__).resolve().parents[1] / "assets" / "embedded_tokenizer"
    if vocab_size == 8192 and cache_dir is None and (shipped / "tokenizer.json").is_file():
        # the default vocabulary ships with the package: WordPiece training is not bit-reproducible
        # (tokenizers #1794), and every machine must tokenize the embedded corpus identically
        return BertTokenizerFast.from_pretrained(str(shipped))
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    version = ".".join(str(v) for v in sys.version_info[:3])
    target = root / f"tokenizer-py{version}-corpus{CORPUS_VERSION}-vocab{vocab_size}"
    stale = False
    if (target / "tokenizer.json").is_file():
        try:
            return BertTokenizerFast.from_pretrained(str(target))
        except Exception as err:  # an unreadable entry (e.g. written by an incompatible version): rebuild it
            warnings.warn(f"rebuilding the cached tokenizer at {target}: {err}", stacklevel=2)
            stale = True
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-tokenizer-", dir=root))
    try:
        tokenizer = train_tokenizer(embedded_paragraphs(), vocab_size=vocab_size, save_dir=tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared $LOTTERY_RG_CACHE should stay readable
        if stale:
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "tokenizer.json").is_file():
                raise
            # Another process (e.g. another rank of the same launch) got there first. WordPiece training is
            # not bit-reproducible (tokenizers issue #1794), so take its vocabulary: all processes must agree.
            tokenizer = BertTokenizerFast.from_pretrained(str(target))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def small_bert_config(
    tokenizer,
    num_hidden_layers: int = 4,
    hidden_size: int = 256,
    num_attention_heads: int = 4,
    intermediate_size: int = 1024,
    max_position_embeddings: int = 128,
    **kwargs: Any,
):
    """``BertConfig`` of the small from-scratch default model, sized to ``tokenizer``.

    The vocabulary size and pad id come from the tokenizer so embeddings and tokenizer always agree; extra
    keyword arguments are passed on to ``BertConfig`` (e.g. dropout probabilities) and may override those.
    """
    from transformers import BertConfig

    params = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return BertConfig(**{**params, **kwargs})


# ---------------------------------------------------------------------------------------------------------------
# Loading data sets
# ---------------------------------------------------------------------------------------------------------------

_EXTENSION_BUILDERS = {"txt": "text", "text": "text", "csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json"}


def _string_columns(dataset) -> list[str]:
    from datasets import Value

    return [n for n, f in dataset.features.items() if isinstance(f, Value) and f.dtype in ("string", "large_string")]


def select_text_column(dataset, text_column: str | None = None) -> str:
    """The column holding the text: ``text_column`` if given, else "text", else the only string column.

    Raises a ``ValueError`` naming the available columns when there is no such column, so a user can pass
    ``--text_column`` instead of meeting a tokenizer error on a non-string field.
    """
    columns = list(dataset.column_names)
    strings = _string_columns(dataset)
    if text_column is not None:
        if text_column not in columns:
            raise ValueError(f"text column {text_column!r} not found; the data set has columns {columns}")
        if text_column not in strings:
            raise ValueError(
                f"text column {text_column!r} is not a string column ({dataset.features[text_column]}); "
                f"string columns: {strings}"
            )
        return text_column
    if "text" in strings:
        return "text"
    if len(strings) == 1:
        return strings[0]
    raise ValueError(
        f"cannot tell which column holds the text: no string column named 'text' and "
        f"{'no' if not strings else len(strings)} string columns {strings if strings else ''} "
        f"among the data set's columns {columns}; pass text_column (--text_column) to choose one"
    )


def load_text_datasets(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    text_column: str | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    **load_kwargs: Any,
):
    """Raw text as a ``DatasetDict`` with "train" and "test" splits and a single "text" column.

    Nothing given: the embedded corpus. ``dataset_name``: ``datasets.load_dataset(dataset_name,
    dataset_config_name)``. ``train_file`` (and optionally ``validation_file``): the "text", "csv" or "json"
    builder chosen by file extension, as in transformers' ``run_mlm.py``. A "validation" split (or else a
    "test" split) becomes "test"; without either a ``test_fraction`` of "train" is split off with ``seed``.
    Empty and missing texts are dropped (the "text" builder turns every blank line into a row).
    """
    import datasets

    if dataset_name is None and train_file is None:
        if validation_file is not None:
            raise ValueError("validation_file needs a train_file")
        if dataset_config_name is not None:
            raise ValueError("dataset_config_name needs a dataset_name")
        return embedded_text_dataset(test_fraction=test_fraction, seed=seed)
    if dataset_name is not None and (train_file is not None or validation_file is not None):
        raise ValueError("give either dataset_name or train_file/validation_file, not both")

    if dataset_name is not None:
        try:
            raw = datasets.load_dataset(dataset_name, dataset_config_name, **load_kwargs)
        except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as e:
            raise ValueError(f"--dataset_name {dataset_name}: {e} (give a Hub data set or a local folder of "
                             f"text files; local files go to --train_file)") from None
    else:
        data_files = {"train": str(train_file)}
        if validation_file is not None:
            data_files["validation"] = str(validation_file)
        extensions = {Path(f).suffix.lower().lstrip(".") for f in data_files.values()}
        builders = {_EXTENSION_BUILDERS.get(e) for e in extensions}
        if None in builders or len(builders) != 1:
            raise ValueError(
                f"cannot load files with extensions {sorted(extensions)}: use one of "
                f"{sorted(_EXTENSION_BUILDERS)} for train_file and validation_file alike"
            )
        builder = builders.pop()
        if builder == "csv" and extensions == {"tsv"}:
            load_kwargs.setdefault("delimiter", "\t")
        raw = datasets.load_dataset(builder, data_files=data_files, **load_kwargs)
    if not isinstance(raw, datasets.DatasetDict):
        raw = datasets.DatasetDict({"train": raw})
    if "train" not in raw:
        raise ValueError(f"the data set has no 'train' split; its splits are {list(raw)}")

    column = select_text_column(raw["train"], text_column)

    def clean(split):
        if column not in split.column_names:
            raise ValueError(f"text column {column!r} is missing from a split with columns {split.column_names}")
        split = split.select_columns([column])
        if column != "text":
            split = split.rename_column(column, "text")
        return split.filter(lambda batch: [t is not None and bool(t.strip()) for t in batch["text"]], batched=True)

    train = clean(raw["train"])
    held_out = next((raw[s] for s in ("validation", "test") if s in raw), None)
    if held_out is not None:
        test = clean(held_out)
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if len(train) < 2:
            raise ValueError(f"need at least 2 non-empty texts to split off a test set, got {len(train)}")
        split = train.train_test_split(test_size=test_fraction, seed=seed, shuffle=True)
        train, test = split["train"], split["test"]
    return datasets.DatasetDict({"train": train, "test": test})


# ---------------------------------------------------------------------------------------------------------------
# Tokenize and group
# ---------------------------------------------------------------------------------------------------------------


# Models whose position ids start at pad_token_id + 1, so max_position_embeddings=514 allows 512 tokens.
_PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text"}


def check_mlm_compatibility(model_config, tokenizer, max_seq_length: int) -> None:
    """Raise a ``ValueError`` if this config (or model), tokenizer and block length cannot train an MLM.

    Each of these would otherwise surface as an index error deep inside the embedding layer or as a
    meaningless loss, after data loading; the trainer calls this first. ``model_config`` may be ``None``
    (checks against the model are skipped), a ``PretrainedConfig`` or a model with a ``.config``.
    """
    config = getattr(model_config, "config", model_config)
    if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        raise ValueError(
            f"the tokenizer ({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '')!r}) has no mask "
            "token, which masked language modelling needs; use a BERT-style tokenizer or add one with "
            "tokenizer.add_special_tokens({'mask_token': '[MASK]'}) and resize the model's embeddings"
        )
    if not isinstance(max_seq_length, int) or max_seq_length < 3:
        raise ValueError(f"max_seq_length must be an int >= 3 ([CLS] + text + [SEP]), got {max_seq_length!r}")
    if max_seq_length > tokenizer.model_max_length:
        raise ValueError(
            f"max_seq_length={max_seq_length} is larger than the tokenizer's model_max_length="
            f"{tokenizer.model_max_length}; lower max_seq_length"
        )
    if config is None:
        return
    declared = getattr(config, "max_position_embeddings", None)
    if declared is not None:
        usable = declared
        if getattr(config, "model_type", None) in _PADDING_OFFSET_POSITIONS:
            usable -= (config.pad_token_id or 0) + 1  # their position ids start after the padding index
        if max_seq_length > usable:
            raise ValueError(
                f"max_seq_length={max_seq_length} is larger than the model's max_position_embeddings={declared}"
                f"{f' (of which {usable} usable)' if usable != declared else ''}; lower max_seq_length to at "
                f"most {usable}"
            )
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}: ids "
            f">= {vocab_size} have no embedding. Use the tokenizer the model was trained with, or call "
            "model.resize_token_embeddings(len(tokenizer))"
        )


def prepare_mlm_datasets(
    datasets,
    tokenizer,
    max_seq_length: int = 128,
    *,
    model_config=None,
    num_proc: int | None = None,
    text_column: str = "text",
):
    """Tokenize every split and group the tokens into blocks of exactly ``max_seq_length``.

    Like ``group_texts`` in ``run_mlm.py``, texts are concatenated so no compute is spent on padding, but
    special tokens are placed sensibly: the texts are joined with [SEP] between them, cut into pieces of
    ``max_seq_length - 2`` tokens, and each block is ``[CLS] piece [SEP]``, so every block looks like a
    BERT input. The tail of each map batch that does not fill a block is dropped. Columns: ``input_ids``,
    ``token_type_ids`` and ``attention_mask`` (where the tokenizer's model takes them) and
    ``special_tokens_mask`` (which keeps ``DataCollatorForLanguageModeling`` from masking [CLS]/[SEP]);
    the raw columns are removed.
    """
    import datasets as hf_datasets

    check_mlm_compatibility(model_config, tokenizer, max_seq_length)
    if isinstance(datasets, hf_datasets.Dataset):
        datasets = hf_datasets.DatasetDict({"train": datasets})
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:  # e.g. a RoBERTa-style tokenizer: use its bos/eos instead
        cls_id, sep_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer has neither [CLS]/[SEP] nor bos/eos tokens to frame each block")
    piece = max_seq_length - 2

    def tokenize_and_group(batch):
        encoded = tokenizer(batch[text_column], add_special_tokens=False, return_attention_mask=False,
                            return_token_type_ids=False, verbose=False)["input_ids"]
        stream: list[int] = []
        for ids in encoded:
            if ids:
                stream.extend(ids)
                stream.append(sep_id)
        n_blocks = len(stream) // piece
        input_ids = [[cls_id, *stream[i * piece:(i + 1) * piece], sep_id] for i in range(n_blocks)]
        special = [[1] + [int(t == sep_id) for t in block[1:-1]] + [1] for block in input_ids]
        out = {"input_ids": input_ids}
        if "token_type_ids" in tokenizer.model_input_names:  # BERT has them, RoBERTa/DistilBERT do not
            out["token_type_ids"] = [[0] * max_seq_length for _ in input_ids]
        if "attention_mask" in tokenizer.model_input_names:
            out["attention_mask"] = [[1] * max_seq_length for _ in input_ids]
        out["special_tokens_mask"] = special
        return out

    out = {}
    for name, split in datasets.items():
        if text_column not in split.column_names:
            raise ValueError(
                f"split {name!r} has no column {text_column!r} (columns: {split.column_names}); "
                "load it with load_text_datasets or pass text_column"
            )
        grouped = split.map(
            tokenize_and_group, batched=True, remove_columns=split.column_names, num_proc=num_proc,
            desc=f"Tokenizing and grouping {name} into blocks of {max_seq_length}",
        )
        if len(grouped) == 0:
            raise ValueError(
                f"split {name!r} has fewer than {piece} tokens, not enough for one block of {max_seq_length}; "
                "use more text or a smaller max_seq_length"
            )
        out[name] = grouped
    return hf_datasets.DatasetDict(out)


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def preprocess_logits_for_metrics(logits, labels):
    """Reduce MLM logits to predicted ids before ``Trainer`` gathers them.

    Otherwise evaluation accumulates batch x seq x vocab floats (about 130 MB per batch of 32 x 128 with an
    8k vocabulary) only to take an argmax at the end.
    """
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=-1)


def masked_token_accuracy(predictions, labels, ignore_index: int = -100) -> tuple[float, int]:
    """Accuracy over the positions whose label is not ``ignore_index``, and the number of such positions."""
    import numpy as np

    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape; "
                         "pass predicted ids (see preprocess_logits_for_metrics), not logits")
    keep = labels != ignore_index
    count = int(keep.sum())
    if count == 0:
        return float("nan"), 0
    return float((predictions[keep] == labels[keep]).mean()), count


def compute_mlm_metrics(eval_pred) -> dict[str, float]:
    """``compute_metrics`` for ``Trainer``: masked-token accuracy (and the number of masked tokens).

    Expects predictions already reduced to ids by :func:`preprocess_logits_for_metrics`.
    """
    from .metrics import MLMMetrics

    return MLMMetrics()(eval_pred)  # the masked-token accuracy module shipped with lottery_rg, through evaluate


def majority_token_accuracy(dataset, tokenizer=None) -> float:
    """Accuracy of always predicting the most frequent non-special token of a grouped MLM split.

    The baseline a trained MLM must beat: masked positions are drawn uniformly from the non-special tokens,
    so its expected masked-token accuracy is the frequency of the commonest one.
    """
    import numpy as np

    counts: dict[int, int] = {}
    total = 0
    for batch in dataset.iter(batch_size=1000):
        ids = np.asarray(batch["input_ids"]).ravel()
        if "special_tokens_mask" in batch:
            ids = ids[np.asarray(batch["special_tokens_mask"]).ravel() == 0]
        elif tokenizer is not None:
            ids = ids[~np.isin(ids, tokenizer.all_special_ids)]
        values, freq = np.unique(ids, return_counts=True)
        for v, f in zip(values.tolist(), freq.tolist()):
            counts[v] = counts.get(v, 0) + f
        total += int(ids.size)
    return max(counts.values()) / total if total else float("nan")
