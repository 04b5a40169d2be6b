"""Reading VLMEvalKit benchmark TSVs the way VLMEvalKit reads them.

VLMEvalKit loads a TSV with ``pd.read_csv(f, sep='\\t')`` (vlmeval/smp/file.py ``load``) and then
``ImageBaseDataset.__init__`` (vlmeval/dataset/image_base.py) drops rows whose ``image`` is missing, turns
``index`` and ``image`` into strings, and resolves an ``image`` of at most 64 characters as the ``index`` of
another row whose (longer) image it shares. Two pandas behaviours change what the model is shown, so they are
reproduced here without importing pandas:

* the default NA strings (``''``, ``'NA'``, ``'None'``, ``'null'``, ``'nan'``, ...) become missing values, so an
  option spelled ``None`` is dropped like an empty one;
* each column's type is inferred from all its values: a column of integers with a gap becomes float, and a
  value is then printed as pandas prints it (``'2'`` → ``'2.0'``), booleans as ``True``/``False``.
"""
from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import os
import re
import string
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

__all__ = ["Table", "Row", "Benchmark", "read_tsv", "load_benchmark", "file_md5", "KNOWN_MD5", "LANGUAGES",
           "language_from_name", "decode_image"]

# pandas._libs.parsers.STR_NA_VALUES (the strings read_csv turns into NaN by default)
NA_STRINGS = frozenset(['', '#N/A', '#N/A N/A', '#NA', '-1.#IND', '-1.#QNAN', '-NaN', '-nan', '1.#IND', '1.#QNAN',
                        '<NA>', 'N/A', 'NA', 'NULL', 'NaN', 'None', 'n/a', 'nan', 'null'])
_TRUE = frozenset(["True", "TRUE", "true"])
_FALSE = frozenset(["False", "FALSE", "false"])
_INT = re.compile(r"^ *[+-]?[0-9]+ *$")
_FLOAT = re.compile(r"^ *[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity) *$", re.I)
_INT64 = (-(1 << 63), (1 << 63) - 1)

#: Published MD5s of the paper's benchmark files, from VLMEvalKit vlmeval/dataset/image_mcq.py
#: (``MMMB_MD5`` and ``MTL_MMBench_MD5``), keyed by the lower-cased file stem.
KNOWN_MD5 = {
    "mmmb_ar": "f3a18b6385f1d9701840aa42de27aead", "mmmb_cn": "13ed82fa89730037292fcaa27f08f430",
    "mmmb_en": "1cd781a71ec5a2983c090b84105d6a01", "mmmb_pt": "548ea2b3bb2da991790386f0015d30d1",
    "mmmb_ru": "ce1cc8a0533425ab0d86b326ebfc2984", "mmmb_tr": "0733739d43090327975294292bc5cd67",
    "mmbench_dev_ar": "4271b4a0d0200e1a86380a878e0d64a4", "mmbench_dev_cn": "2ed5135326fed02c8e51ea50dda8222f",
    "mmbench_dev_en": "d9ab776fc018b3d45785e9a5c23431c2", "mmbench_dev_pt": "4ddfbcd27ef12444b908c03831cd0295",
    "mmbench_dev_tr": "4fab39d501389d3d6cc90264bb708f11", "mmbench_dev_ru": "5ba1171ff2e68f80637bf78349e402a5",
}

#: The paper's six languages. Files say ``cn`` for Chinese; ``zh`` is accepted as its name too.
LANGUAGES = ("en", "zh", "pt", "ar", "tr", "ru")
_SUFFIX_LANG = {"en": "en", "cn": "zh", "zh": "zh", "pt": "pt", "ar": "ar", "tr": "tr", "ru": "ru"}

#: An ``image`` field this short is another row's index (ImageBaseDataset: ``len(image_map[k]) <= 64``).
IMAGE_REF_MAX = 64


class TSVError(ValueError):
    """A TSV that cannot be read as a benchmark (names the file and line)."""


@dataclass
class Table:
    """Columns and typed cells (``None`` = missing) of a TSV, as pandas would give them."""

    path: str
    columns: List[str]
    cells: Dict[str, List[Any]]
    lines: List[int]  # 1-based line of each row in the file (for error messages)

    def __len__(self) -> int:
        return len(self.lines)


def _infer(values: List[Optional[str]]) -> List[Any]:
    """Typed values of one column, following read_csv's inference: bool, int, float, else str."""
    present = [v for v in values if v is not None]
    if not present:
        return [None] * len(values)
    has_na = len(present) < len(values)
    if all(v in _TRUE or v in _FALSE for v in present):
        return [None if v is None else v in _TRUE for v in values]
    if all(_INT.match(v) for v in present):
        ints = [None if v is None else int(v) for v in values]
        if all(_INT64[0] <= i <= _INT64[1] for i in ints if i is not None):
            # int64 column; one gap makes pandas use float64 for all of it
            return [None if i is None else (float(i) if has_na else i) for i in ints]
        return values
    if all(_FLOAT.match(v) for v in present):
        return [None if v is None else float(v.strip()) for v in values]
    return values


def read_tsv(path: Union[str, "os.PathLike[str]"]) -> Table:
    """Reads a tab-separated file with a header row as ``pd.read_csv(path, sep='\\t')`` does."""
    path = os.fspath(path)
    csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))  # base64 images are far above csv's 128 KiB default
    try:
        f = open(path, "r", encoding="utf-8-sig", newline="")
    except OSError as e:
        raise TSVError(f"{path}: cannot open: {e.strerror}") from None
    with f:
        reader = csv.reader(f, delimiter="\t", quotechar='"', doublequote=True, strict=False)
        try:
            header = next(reader, None)
            if header is None:
                raise TSVError(f"{path}: empty file (no header row)")
            raw: List[List[str]] = []
            lines: List[int] = []
            for rec in reader:
                if not rec or (len(rec) == 1 and rec[0] == ""):
                    continue  # read_csv skips blank lines
                if len(rec) > len(header):
                    raise TSVError(f"{path}: line {reader.line_num}: {len(rec)} fields, the header has "
                                   f"{len(header)}")
                raw.append(rec)
                lines.append(reader.line_num)
        except UnicodeDecodeError as e:
            raise TSVError(f"{path}: not UTF-8 text (byte offset {e.start} of a read chunk: {e.reason})") from None
        except csv.Error as e:
            raise TSVError(f"{path}: line {reader.line_num}: {e}") from None
    if len(set(header)) != len(header):
        dup = sorted({c for c in header if header.count(c) > 1})
        raise TSVError(f"{path}: duplicate column names {dup}")
    cells = {}
    for j, name in enumerate(header):
        col = [rec[j] if j < len(rec) else "" for rec in raw]
        cells[name] = _infer([None if v in NA_STRINGS else v for v in col])
    return Table(path, list(header), cells, lines)


def text(value: object) -> Optional[str]:
    """A typed cell as VLMEvalKit's prompt shows it: ``str(value)`` (pandas prints floats like Python)."""
    return None if value is None else str(value)


@dataclass
class Row:
    """One benchmark question, with its image resolved (a base64 string) or the reason it could not be."""

    index: Union[int, str]
    question: str
    options: Dict[str, str]        # letter -> text, non-missing only, in letter order
    answer: Optional[str]
    hint: Optional[str]
    category: Optional[str]
    l2_category: Optional[str]
    split: Optional[str]
    image: Optional[str]           # base64 text
    image_error: Optional[str]
    image_key: str                 # hash of the resolved image text (rows sharing an image share it)
    line: int


@dataclass
class Benchmark:
    """One TSV: the dataset name (file stem, as VLMEvalKit names a dataset), its language and rows."""

    name: str
    path: str
    lang: str                       # reported under (prompts follow the name: prompts.instruction_language)
    scoring: str                    # "vanilla" or "circular"
    rows: List[Row]
    skipped_no_image: int = 0
    md5: Optional[str] = None
    notes: List[str] = field(default_factory=list)


def file_md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def language_from_name(name: str) -> Optional[str]:
    """The language a dataset name ends in (``_en``, ``_cn``, ``_pt``, ``_ar``, ``_tr``, ``_ru``), else None."""
    m = re.search(r"_([A-Za-z]{2})$", name)
    return _SUFFIX_LANG.get(m.group(1).lower()) if m else None


def normalise_lang(lang: str) -> str:
    code = _SUFFIX_LANG.get(str(lang).lower())
    if code is None:
        raise ValueError(f"unknown language {lang!r}: expected one of en, zh (or cn), pt, ar, tr, ru")
    return code


def _image_key(s: str) -> str:
    return hashlib.blake2b(s.encode("ascii", "surrogateescape"), digest_size=12).hexdigest()


def load_benchmark(path: Union[str, "os.PathLike[str]"], *, lang: Optional[str] = None,
                   scoring: str = "auto", check_md5: bool = True) -> Benchmark:
    """Reads a VLMEvalKit multiple-choice TSV into a :class:`Benchmark`.

    ``lang`` overrides the file-name suffix as the language the file is reported under (``Benchmark.lang``);
    the prompt's instruction depends on the name only (:func:`parrot.evaluation.prompts.instruction_language`).
    ``scoring`` "auto" follows ImageMCQDataset.evaluate: circular when the dataset name contains "mmbench" or
    "ccbench", else vanilla. Known MMMB / multilingual MMBench
    files are checked against their published MD5 (a mismatch warns, naming the file).
    """
    path = os.fspath(path)
    name = os.path.splitext(os.path.basename(path))[0]
    table = read_tsv(path)
    bench = Benchmark(name=name, path=path, lang="en", scoring="vanilla", rows=[])

    if check_md5 and name.lower() in KNOWN_MD5:
        bench.md5 = file_md5(path)
        if bench.md5 != KNOWN_MD5[name.lower()]:
            msg = (f"{path}: MD5 {bench.md5} differs from the published {KNOWN_MD5[name.lower()]} of "
                   f"{name}.tsv; scores will not be comparable with the paper's")
            warnings.warn(msg, stacklevel=2)
            bench.notes.append(msg)

    if lang is not None:
        bench.lang = normalise_lang(lang)
    else:
        found = language_from_name(name)
        if found is None:
            msg = (f"{path}: no language suffix (_en, _cn, _pt, _ar, _tr, _ru) and no --lang; using the "
                   "English instruction, as VLMEvalKit's Parrot wrapper does, and reporting it as English")
            warnings.warn(msg, stacklevel=2)
            bench.notes.append(msg)
            found = "en"
        bench.lang = found

    if scoring == "auto":
        low = name.lower()
        bench.scoring = "circular" if ("mmbench" in low or "ccbench" in low) else "vanilla"
    elif scoring in ("vanilla", "circular"):
        bench.scoring = scoring
    else:
        raise ValueError(f"scoring must be 'auto', 'vanilla' or 'circular', got {scoring!r}")

    for name in ("index", "question"):
        if name not in table.cells:
            raise TSVError(f"{path}: no '{name}' column (columns: {table.columns})")
    has_image = "image" in table.cells
    letters = [c for c in string.ascii_uppercase if c in table.cells]
    col = table.cells.get

    # rows without an image are dropped, as ImageBaseDataset(skip_noimg=True) does
    keep = [i for i in range(len(table)) if not has_image or table.cells["image"][i] is not None]
    bench.skipped_no_image = len(table) - len(keep)

    for i in keep:
        if table.cells["index"][i] is None:
            raise TSVError(f"{path}: line {table.lines[i]}: empty 'index'")
    images: Dict[Optional[str], str] = {}
    if has_image:
        for i in keep:
            images[text(table.cells["index"][i])] = str(table.cells["image"][i])   # kept rows have one

    seen = set()
    for i in keep:
        index = table.cells["index"][i]
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if index in seen:
            raise TSVError(f"{path}: line {table.lines[i]}: duplicate index {index!r}")
        seen.add(index)
        image: Optional[str] = None
        error: Optional[str] = None
        if has_image:
            image = images[text(table.cells["index"][i])]
            if len(image) <= IMAGE_REF_MAX:
                target = images.get(image)
                if target is None or len(target) <= IMAGE_REF_MAX:
                    error = (f"{path}: line {table.lines[i]}: image field {image!r} refers to index {image!r}, "
                             "which has no image of its own in this file")
                    image = None
                else:
                    image = target
            if image is not None and image.startswith("[") and image.endswith("]"):
                error = f"{path}: line {table.lines[i]}: a list of images; Parrot takes one image per question"
                image = None
        else:
            error = f"{path}: no 'image' column"
        question = text(table.cells["question"][i])
        bench.rows.append(Row(
            index=index,
            question=question if question is not None else "nan",
            options={c: str(table.cells[c][i]) for c in letters if table.cells[c][i] is not None},
            answer=text(col("answer", [None] * len(table))[i]),
            hint=text(col("hint", [None] * len(table))[i]),
            category=text(col("category", [None] * len(table))[i]),
            l2_category=text(col("l2-category", [None] * len(table))[i]),
            split=text(col("split", [None] * len(table))[i]),
            image=image, image_error=error,
            image_key=_image_key(image) if image is not None else f"error:{name}:{index}",
            line=table.lines[i]))

    if bench.scoring == "circular":
        bad = [r.index for r in bench.rows if not isinstance(r.index, int)]
        if bad:
            raise TSVError(f"{path}: circular scoring needs integer indices; got {bad[0]!r}")
    return bench


def decode_image(b64: str) -> bytes:
    """The bytes of a base64 image field, decoded as VLMEvalKit does (``base64.b64decode``)."""
    try:
        return base64.b64decode(b64)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"image is not valid base64 ({e})") from None

