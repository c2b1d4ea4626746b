"""Labelled (or unlabelled) text from a file, tokenized for a text model.

One spelling for every flag that takes data (``--data``, ``--calib-data``,
``--train-data``): ``text:FILE`` or just ``FILE`` ending in ``.tab`` (Orange:
three header rows — names, types, flags — then tab-separated rows), ``.tsv``,
``.csv`` (one header row) or ``.jsonl`` (one JSON object per line).

Splits: ``TRAIN_FILE,TEST_FILE`` names both; a file whose name says ``train``
(``test``) is paired with its sibling saying ``test`` (``train``) when that exists
(e.g. ``reuters-r8-train.tab`` + ``reuters-r8-test.tab``); any other single file
is both the train and the test split.

Columns: ``--text-column`` / ``--label-column``, else detected — the Orange
``class`` flag or a column named label|class|category|topic is the label, a
column named text|sentence|document|content (or the only other column) is the
text. String labels become class ids in sorted order (or the model's own
``label2id`` when it names every label); integer labels are used as given.
"""
from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

TEXT_SUFFIXES = (".tab", ".tsv", ".csv", ".jsonl")
TEXT_SCHEME = "text"
TEXT_NAMES = ("text", "sentence", "document", "content")
LABEL_NAMES = ("label", "class", "category", "topic")
TEXT_FLAG, LABEL_FLAG = "--text-column", "--label-column"
#: Orange .tab type names (row 2) and the ones holding free text.
_ORANGE_TYPES = {"", "d", "discrete", "c", "continuous", "s", "string", "text", "t", "time", "basket"}
_ORANGE_TEXT_TYPES = {"s", "string", "text"}
_ORANGE_MISSING = {"", "?", "~"}
_INT = re.compile(r"^-?\d+$")


def is_text_spec(spec: object) -> bool:
    """True for ``text:...`` and for paths ending in a text suffix (``.tab``, ``.tsv``, ``.csv``, ``.jsonl``)."""
    if not isinstance(spec, (str, Path)):
        return False
    s = str(spec).strip()
    if s.startswith(f"{TEXT_SCHEME}:"):
        return True
    return all(p.strip().lower().endswith(TEXT_SUFFIXES) for p in s.split(",")) and bool(s)


# -- reading one file -------------------------------------------------------------------------------
@dataclass
class TextTable:
    """The text (and raw label strings) of one file, and which columns they came from."""

    path: Path
    format: str
    columns: list[str]
    texts: list[str]
    labels: list[str] | None
    text_column: str
    label_column: str | None
    detected: dict[str, str] = field(default_factory=dict)  # column → "flag" | how it was detected

    def __len__(self) -> int:
        return len(self.texts)


def _fmt(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DatasetError(f"{str(path)!r} is not a text data file (suffix {suffix or 'none'})",
                           fix=f"pass a {', '.join(TEXT_SUFFIXES)} file")
    return suffix[1:]


def _read_rows(path: Path, flag: str) -> tuple[str, list[str], list[list[Any]], dict[str, dict[str, str]]]:
    """(format, column names, rows, Orange types/flags per column) of one file."""
    fmt = _fmt(path)
    if not path.is_file():
        raise DatasetError(f"text data file {str(path)!r} does not exist", fix=f"check the path passed with {flag}")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {str(path)!r} as UTF-8 text ({type(exc).__name__}: {exc})",
                           fix="save the file as UTF-8") from None
    if not raw.strip():
        raise DatasetError(f"text data file {str(path)!r} is empty", fix=f"pass {flag} a file with a header and rows")
    if fmt == "jsonl":
        return (fmt, *_jsonl(raw, path))
    lines = raw.splitlines()
    if fmt == "tab":
        header = [c.strip() for c in lines[0].split("\t")]
        second = lines[1].split("\t") if len(lines) > 1 else []
        if len(lines) >= 3 and all(c.strip().lower() in _ORANGE_TYPES or " " in c.strip() for c in second):
            types = [c.strip().lower() for c in second] + [""] * len(header)
            flags = [c.strip().lower() for c in lines[2].split("\t")] + [""] * len(header)
            meta = {n: {"type": types[i], "flags": flags[i]} for i, n in enumerate(header)}
            rows = [ln.split("\t") for ln in lines[3:] if ln.strip()]
            return fmt, header, rows, meta
        return fmt, header, [ln.split("\t") for ln in lines[1:] if ln.strip()], {}
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    dialect = "excel-tab" if fmt == "tsv" else "excel"
    try:
        table = [r for r in csv.reader(lines, dialect=dialect) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise DatasetError(f"cannot parse {str(path)!r} as {fmt.upper()} ({exc})",
                           fix=f"write it with one header row and {'tab' if fmt == 'tsv' else 'comma'}-separated rows") from None
    return fmt, [c.strip() for c in table[0]], table[1:], {}


def _jsonl(raw: str, path: Path) -> tuple[list[str], list[list[Any]], dict[str, dict[str, str]]]:
    objects = []
    for i, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{str(path)!r} line {i} is not JSON ({exc})",
                               fix="write one JSON object per line (JSON Lines)") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{str(path)!r} line {i} is a JSON {type(obj).__name__}, not an object",
                               fix='write one object per line, e.g. {"text": "...", "label": "..."}')
        objects.append(obj)
    columns = list(dict.fromkeys(k for o in objects for k in o))
    return columns, [[o.get(c) for c in columns] for o in objects], {}


def _pick(columns: list[str], wanted: str | None, flag: str, what: str, path: Path) -> str | None:
    if wanted is None:
        return None
    if wanted in columns:
        return wanted
    folded = [c for c in columns if c.lower() == wanted.lower()]
    if len(folded) == 1:
        return folded[0]
    raise DatasetError(f"{str(path)!r} has no {what} column {wanted!r} (columns: {', '.join(columns)})",
                       fix=f"pass {flag} with one of: {', '.join(columns)}")


def _ambiguous(path: Path, what: str, found: list[str], columns: list[str], flag: str) -> DatasetError:
    return DatasetError(f"{str(path)!r}: {what} column is ambiguous, candidates {', '.join(found)} "
                        f"(columns: {', '.join(columns)})", fix=f"name it with {flag} NAME")


def _detect(path: Path, columns: list[str], meta: dict[str, dict[str, str]], text_column: str | None,
            label_column: str | None) -> tuple[str, str | None, dict[str, str]]:
    how: dict[str, str] = {}
    label = _pick(columns, label_column, LABEL_FLAG, "label", path)
    text = _pick(columns, text_column, TEXT_FLAG, "text", path)
    if label is not None:
        how[label] = LABEL_FLAG
    else:
        flagged = [c for c in columns if "class" in meta.get(c, {}).get("flags", "").split()
                   or meta.get(c, {}).get("flags", "") == "c"]
        named = [c for c in columns if c.lower() in LABEL_NAMES and c != text]
        found, why = (flagged, "Orange class flag") if flagged else (named, "column name")
        if len(found) > 1:
            raise _ambiguous(path, "label", found, columns, LABEL_FLAG)
        if found:
            label = found[0]
            how[label] = why
    if text is not None:
        how[text] = TEXT_FLAG
    else:
        rest = [c for c in columns if c != label]
        named = [c for c in rest if c.lower() in TEXT_NAMES]
        typed = [c for c in rest if meta.get(c, {}).get("type") in _ORANGE_TEXT_TYPES]
        for found, why in ((named, "column name"), (typed, "Orange string type"),
                           (rest if len(rest) == 1 else [], "only other column")):
            if len(found) > 1:
                raise _ambiguous(path, "text", found, columns, TEXT_FLAG)
            if found:
                text = found[0]
                how[text] = why
                break
        if text is None:
            raise DatasetError(f"{str(path)!r}: no text column found (columns: {', '.join(columns)}; "
                               f"looked for {'|'.join(TEXT_NAMES)})", fix=f"name it with {TEXT_FLAG} NAME")
    if text == label:
        raise DatasetError(f"{str(path)!r}: column {text!r} cannot be both the text and the label",
                           fix=f"pass different columns to {TEXT_FLAG} and {LABEL_FLAG}")
    return text, label, how


def read_text_file(path: str | Path, text_column: str | None = None, label_column: str | None = None,
                   flag: str = "--data") -> TextTable:
    """Read one ``.tab``/``.tsv``/``.csv``/``.jsonl`` file: its text column and (optional) label column."""
    p = Path(path).expanduser()
    fmt, columns, rows, meta = _read_rows(p, flag)
    if not rows:
        raise DatasetError(f"text data file {str(p)!r} has a header ({', '.join(columns)}) but no rows",
                           fix=f"pass {flag} a file with at least one row")
    text, label, how = _detect(p, columns, meta, text_column, label_column)
    ti = columns.index(text)
    li = columns.index(label) if label is not None else None

    def cell(row: list[Any], i: int) -> Any:
        return row[i] if i < len(row) else None

    texts = ["" if cell(r, ti) is None else str(cell(r, ti)) for r in rows]
    labels = None
    if li is not None:
        missing_marks = _ORANGE_MISSING if fmt == "tab" else {""}
        labels = []
        missing = []
        for n, r in enumerate(rows, start=1):
            v = cell(r, li)
            if isinstance(v, bool) or isinstance(v, (float, dict, list)):
                v = json.dumps(v)
            s = None if v is None else str(v).strip()
            if s is None or s in missing_marks:
                missing.append(n)
            labels.append(s or "")
        if missing:
            raise DatasetError(f"{str(p)!r}: {len(missing)} row(s) have no value in label column {label!r} "
                               f"(data rows {', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''})",
                               fix=f"fill in the labels, or name another column with {LABEL_FLAG}")
    return TextTable(p, fmt, columns, texts, labels, text, label, how)


# -- a dataset: train and test split, labels as class ids -----------------------------------------
@dataclass
class TextDataset:
    """Train and test text with int64 class ids (None when unlabelled); ``class_names[id]`` names a class."""

    name: str
    train: TextTable
    test: TextTable
    y_train: np.ndarray | None
    y_test: np.ndarray | None
    class_names: list[str] | None
    label_mapping: str | None
    pairing: str

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    def split(self, split: str) -> tuple[list[str], np.ndarray | None]:
        """(texts, labels) of ``"train"`` or ``"test"``."""
        if split == "train":
            return self.train.texts, self.y_train
        return self.test.texts, self.y_test

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": "text", "format": self.train.format,
            "train_file": str(self.train.path), "test_file": str(self.test.path), "pairing": self.pairing,
            "train_size": len(self.train), "test_size": len(self.test),
            "text_column": self.train.text_column, "label_column": self.train.label_column,
            "columns_detected": self.train.detected,
            "num_classes": self.num_classes, "label_names": self.class_names, "label_mapping": self.label_mapping,
        }


def _sibling(path: Path) -> tuple[Path, str] | None:
    """The ``test`` file beside a ``train`` file (or the reverse) and which split ``path`` is."""
    name = path.name
    for own, other in (("train", "test"), ("test", "train"), ("Train", "Test"), ("Test", "Train"),
                       ("TRAIN", "TEST"), ("TEST", "TRAIN")):
        at = name.rfind(own)
        if at >= 0:
            candidate = path.with_name(name[:at] + other + name[at + len(own):])
            if candidate.is_file():
                return candidate, own.lower()
    return None


def text_files(spec: str) -> tuple[Path, Path, str]:
    """(train file, test file, how they were paired) of a text spec."""
    body = spec.strip()
    if body.startswith(f"{TEXT_SCHEME}:"):
        body = body[len(TEXT_SCHEME) + 1:]
    parts = [p.strip() for p in body.split(",")]
    if not body or any(not p for p in parts) or len(parts) > 2:
        raise DatasetError(f"text data spec {spec!r} needs one file or TRAIN,TEST files",
                           fix="pass e.g. --data text:reviews.csv or --data train.tsv,test.tsv")
    paths = [Path(p).expanduser() for p in parts]
    if len(paths) == 2:
        return paths[0], paths[1], "train,test files"
    pair = _sibling(paths[0])
    if pair is None:
        return paths[0], paths[0], "one file (train = test)"
    other, own = pair
    return (paths[0], other, "train file + sibling test file") if own == "train" else \
        (other, paths[0], "test file + sibling train file")


def _default_names(names: Sequence[str]) -> bool:
    return all(re.fullmatch(r"LABEL_\d+", str(n)) for n in names)


def label_ids(labels: Sequence[str], label2id: Mapping[str, int] | None = None) -> tuple[dict[str, int], list[str], str]:
    """Class id per label string, names by id, and how the mapping was chosen.

    Integer labels are ids as given; names the model's ``label2id`` knows (all of them,
    exactly or ignoring case) take its ids; otherwise sorted label names get 0, 1, ...
    """
    distinct = sorted(set(labels))
    if distinct and all(_INT.match(s) for s in distinct):
        ids = {s: int(s) for s in distinct}
        if min(ids.values()) < 0:
            raise DatasetError(f"integer labels must be >= 0, got {min(ids.values())}",
                               fix="use class ids 0..C-1, or label names")
        return ids, [str(i) for i in range(max(ids.values()) + 1)], "integer labels (used as class ids)"
    if label2id and not _default_names(list(label2id)):
        for fold in (lambda s: s, str.lower):
            known = {fold(k): int(v) for k, v in label2id.items()}
            if all(fold(s) in known for s in distinct):
                names = [""] * (max(known.values()) + 1)
                for k, v in label2id.items():
                    names[int(v)] = str(k)
                return {s: known[fold(s)] for s in distinct}, names, "model config (label2id)"
    return {s: i for i, s in enumerate(distinct)}, distinct, "sorted label names"


def load_text_dataset(spec: str, text_column: str | None = None, label_column: str | None = None, *,
                      flag: str = "--data", label2id: Mapping[str, int] | None = None) -> TextDataset:
    """Resolve a text spec (``text:FILE``, ``FILE.tsv``, ``TRAIN,TEST``) to train/test texts and class ids."""
    train_path, test_path, pairing = text_files(spec)
    train = read_text_file(train_path, text_column, label_column, flag)
    test = train if test_path == train_path else read_text_file(
        test_path, text_column or train.text_column, label_column, flag)
    if (train.label_column is None) != (test.label_column is None):
        has, lacks = (train, test) if train.label_column else (test, train)
        raise DatasetError(f"{str(has.path)!r} has label column {has.label_column!r} but {str(lacks.path)!r} "
                           f"has none (columns: {', '.join(lacks.columns)})",
                           fix=f"give both files the label column, or name it with {LABEL_FLAG}")
    y_train = y_test = None
    names = mapping = None
    if train.labels is not None and test.labels is not None:
        ids, names, mapping = label_ids(train.labels + (test.labels if test is not train else []), label2id)
        y_train = np.array([ids[s] for s in train.labels], dtype=np.int64)
        y_test = y_train if test is train else np.array([ids[s] for s in test.labels], dtype=np.int64)
    name = train_path.name if train_path == test_path else f"{train_path.name},{test_path.name}"
    return TextDataset(name, train, test, y_train, y_test, names, mapping, pairing)
