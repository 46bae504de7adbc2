"""Loading labelled routing data: per-prompt correctness of a weak and a strong model.

The layout is the one of ``routing-eval/`` (see its README): one CSV per subject with a
``prompt`` column and one True/False column per model, found anywhere under the data folder.
Each CSV is one *group* (a subject): cross-validation keeps a group's prompts together.

A model's full answers may come beside its correctness, in a column ``<model column>_response``
(``routing-eval/gsm8k-dev/``): they are kept when every file has them, for the answer-side
judge and the cascade (``quality.cascade``).

Prompts listed in a ``*contaminated*.jsonl`` file in the data folder, or directly in the folder
above it (``routing-eval/`` holds the list beside its ``mmlu/`` folder; field ``eval_prompt``,
one JSON object a line) are left out: they overlap the training data of the project the labels
come from, so figures that include them would not be clean.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

PROMPT_COLUMN = "prompt"
#: A model's answers: the column ``<model column>`` + this suffix.
ANSWER_SUFFIX = "_response"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class DataError(ValueError):
    """The data folder or one of its files cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Dataset:
    """Labelled prompts, in file order then row order.

    ``rows[i]`` is the 0-based index of the record within its CSV (header excluded), so
    ``(files[groups[i]], rows[i])`` identifies a prompt in the original data.
    """

    prompts: list[str]
    weak: NDArray[np.bool_]
    strong: NDArray[np.bool_]
    groups: NDArray[np.int64]
    rows: NDArray[np.int64]
    files: list[str]
    weak_model: str
    strong_model: str
    excluded: int = 0
    weak_answers: list[str] | None = None
    strong_answers: list[str] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def group_names(self) -> list[str]:
        """Short subject names: the file stem without a leading ``<benchmark>_`` prefix (the
        name of the file's folder, or a prefix all the files share)."""
        parts = [Path(f).stem.partition("_") for f in self.files]
        shared = {p for p, _, r in parts if r}
        common = next(iter(shared)) if len(shared) == 1 and all(r for _, _, r in parts) else None
        return [
            rest if rest and prefix in (Path(f).parent.name, common) else f"{prefix}{sep}{rest}"
            for f, (prefix, sep, rest) in zip(self.files, parts, strict=True)
        ]

    def subset(self, index: NDArray[np.int64] | Sequence[int]) -> Dataset:
        idx = np.asarray(index, dtype=np.int64)
        return Dataset(
            prompts=[self.prompts[i] for i in idx],
            weak=self.weak[idx],
            strong=self.strong[idx],
            groups=self.groups[idx],
            rows=self.rows[idx],
            files=self.files,
            weak_model=self.weak_model,
            strong_model=self.strong_model,
            excluded=self.excluded,
            weak_answers=None if self.weak_answers is None else [self.weak_answers[i] for i in idx],
            strong_answers=None
            if self.strong_answers is None
            else [self.strong_answers[i] for i in idx],
        )

    @property
    def has_answers(self) -> bool:
        return self.weak_answers is not None and self.strong_answers is not None


def _parse_bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise DataError(f"{where}: expected True/False, got {value!r}")


def contaminated_prompts(data_dir: Path) -> set[str]:
    """Prompts flagged in ``*contaminated*.jsonl`` files under ``data_dir`` or directly in its
    parent folder."""
    flagged: set[str] = set()
    paths = {*data_dir.rglob("*contaminated*.jsonl"), *data_dir.parent.glob("*contaminated*.jsonl")}
    for path in sorted(paths):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                prompt = record.get("eval_prompt") if isinstance(record, dict) else None
                if not isinstance(prompt, str):
                    raise DataError(f"{path}:{lineno}: no string field 'eval_prompt'")
                flagged.add(prompt)
    return flagged


def _model_columns(
    header: Sequence[str], path: Path, weak: str | None, strong: str | None
) -> tuple[str, str]:
    if PROMPT_COLUMN not in header:
        raise DataError(f"{path}: no {PROMPT_COLUMN!r} column (columns: {', '.join(header)})")
    others = [
        c
        for c in header
        if c != PROMPT_COLUMN
        and not (c.endswith(ANSWER_SUFFIX) and c[: -len(ANSWER_SUFFIX)] in header)
    ]
    for name, given in (("weak", weak), ("strong", strong)):
        if given is not None and given not in others:
            raise DataError(
                f"{path}: no {name} model column {given!r} (columns: {', '.join(header)})"
            )
    if weak is not None and strong is not None:
        return weak, strong
    if len(others) != 2:
        raise DataError(
            f"{path}: expected exactly two model columns besides {PROMPT_COLUMN!r}, found "
            f"{others}; name them with --weak-column and --strong-column"
        )
    if weak is not None:
        return weak, next(c for c in others if c != weak)
    if strong is not None:
        return next(c for c in others if c != strong), strong
    # Decided after loading, by accuracy; keep file order for now.
    return others[0], others[1]


def load(
    data_dir: str | Path,
    *,
    weak_column: str | None = None,
    strong_column: str | None = None,
    exclude_contaminated: bool = True,
    limit_per_file: int | None = None,
) -> Dataset:
    """Load every ``*.csv`` under ``data_dir`` (sorted by path, so the order is stable).

    Without explicit column names, the two model columns are told apart by accuracy: the less
    accurate one over the whole data is the weak model.
    """
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*.csv") if p.is_file())
    if not paths:
        raise DataError(f"no .csv files under {root}")
    flagged = (
        contaminated_prompts(root if root.is_dir() else root.parent)
        if exclude_contaminated
        else set()
    )

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    prompts: list[str] = []
    col_a: list[bool] = []
    col_b: list[bool] = []
    groups: list[int] = []
    rows: list[int] = []
    files: list[str] = []
    columns: tuple[str, str] | None = None
    excluded = 0
    answers_a: list[str] = []
    answers_b: list[str] = []
    with_answers = True
    for path in paths:
        rel = str(path.relative_to(root)) if root.is_dir() else path.name
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            cols = _model_columns(header, path, weak_column, strong_column)
            if columns is None:
                columns = cols
            elif set(cols) != set(columns):
                raise DataError(f"{path}: model columns {list(cols)} differ from {list(columns)}")
            group = len(files)
            files.append(rel)
            with_answers = with_answers and all(c + ANSWER_SUFFIX in header for c in columns)
            taken = 0
            for row_index, record in enumerate(reader):
                if limit_per_file is not None and taken >= limit_per_file:
                    break
                where = f"{path}: record {row_index}"
                prompt = record.get(PROMPT_COLUMN)
                if prompt is None or any(record.get(c) is None for c in columns):
                    raise DataError(f"{where}: missing fields")
                if prompt in flagged:
                    excluded += 1
                    continue
                prompts.append(prompt)
                col_a.append(_parse_bool(record[columns[0]], f"{where}, column {columns[0]!r}"))
                col_b.append(_parse_bool(record[columns[1]], f"{where}, column {columns[1]!r}"))
                groups.append(group)
                rows.append(row_index)
                if with_answers:
                    answers_a.append(record.get(columns[0] + ANSWER_SUFFIX) or "")
                    answers_b.append(record.get(columns[1] + ANSWER_SUFFIX) or "")
                taken += 1
    assert columns is not None
    if not prompts:
        raise DataError(f"no labelled prompts under {root}")
    a = np.array(col_a, dtype=np.bool_)
    b = np.array(col_b, dtype=np.bool_)
    weak_name, strong_name = columns
    if weak_column is None and strong_column is None and a.mean() > b.mean():
        a, b = b, a
        weak_name, strong_name = strong_name, weak_name
        answers_a, answers_b = answers_b, answers_a
    return Dataset(
        prompts=prompts,
        weak=a,
        strong=b,
        groups=np.array(groups, dtype=np.int64),
        rows=np.array(rows, dtype=np.int64),
        files=files,
        weak_model=weak_name,
        strong_model=strong_name,
        excluded=excluded,
        weak_answers=answers_a if with_answers else None,
        strong_answers=answers_b if with_answers else None,
    )


def load_request_bodies(
    path: str | Path, *, exclude_contaminated: bool = True
) -> list[dict[str, Any]]:
    """Request bodies to score, for calibration (no labels needed).

    ``path`` is a file or a folder of files: ``.csv`` with a ``prompt`` column (each prompt
    becomes one user message) and ``.jsonl`` with one chat or completion request body per line
    (an object with ``messages`` or ``prompt``), e.g. a sample of real traffic.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if root.is_file():
        paths = [root]
    else:
        paths = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and p.suffix in (".csv", ".jsonl") and "contaminated" not in p.name
        )
    if not paths:
        raise DataError(f"no .csv or .jsonl files under {root}")
    flagged = (
        contaminated_prompts(root if root.is_dir() else root.parent)
        if exclude_contaminated
        else set()
    )
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    bodies: list[dict[str, Any]] = []
    for p in paths:
        if p.suffix == ".csv":
            with p.open(encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                if PROMPT_COLUMN not in (reader.fieldnames or []):
                    raise DataError(f"{p}: no {PROMPT_COLUMN!r} column")
                for record in reader:
                    prompt = record.get(PROMPT_COLUMN) or ""
                    if prompt in flagged:
                        continue
                    bodies.append({"messages": [{"role": "user", "content": prompt}]})
        else:
            with p.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        body = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
                    if not isinstance(body, dict) or not ("messages" in body or "prompt" in body):
                        raise DataError(
                            f"{p}:{lineno}: expected a request body with 'messages' or 'prompt'"
                        )
                    bodies.append(body)
    if not bodies:
        raise DataError(f"no prompts under {root}")
    return bodies
