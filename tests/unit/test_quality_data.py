"""Loading labelled routing data and request samples: layout, exclusions, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeta_router.quality.data import DataError, load, load_request_bodies

SMALL = Path(__file__).parent / "data" / "routing_eval_small"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_small_subset_loads_with_contaminated_prompts_left_out() -> None:
    ds = load(SMALL)
    assert len(ds.files) == 7
    assert ds.files[0] == "mmlu/mmlu_abstract_algebra.csv"
    assert ds.group_names[0] == "abstract_algebra"
    assert ds.weak_model == WEAK
    assert ds.strong_model == STRONG
    assert ds.excluded == 2
    flagged = [
        json.loads(line)["eval_prompt"]
        for line in (SMALL / "mmlu_contaminated_prompts.jsonl").open()
    ]
    assert not set(flagged) & set(ds.prompts)
    # Row numbers still point at the original records: the flagged history prompt is record 4.
    history = ds.files.index("mmlu/mmlu_high_school_european_history.csv")
    rows = [int(r) for g, r in zip(ds.groups, ds.rows, strict=True) if g == history]
    assert 4 not in rows
    assert rows == [r for r in range(12) if r != 4]

    everything = load(SMALL, exclude_contaminated=False)
    assert len(everything) == len(ds) + 2
    assert everything.excluded == 0


def test_limit_per_file_and_subset() -> None:
    ds = load(SMALL, limit_per_file=3)
    assert len(ds) == 21
    sub = ds.subset([0, 5])
    assert sub.prompts == [ds.prompts[0], ds.prompts[5]]
    assert list(sub.rows) == [ds.rows[0], ds.rows[5]]


def test_weak_and_strong_columns_by_accuracy_or_by_name(tmp_path: Path) -> None:
    # The better model comes first here; it is still recognised as the strong one.
    write(tmp_path / "a.csv", "prompt,big,small\nq1,True,False\nq2,True,True\nq3,False,False\n")
    ds = load(tmp_path)
    assert (ds.weak_model, ds.strong_model) == ("small", "big")
    assert list(ds.weak) == [False, True, False]
    named = load(tmp_path, weak_column="big", strong_column="small")
    assert (named.weak_model, named.strong_model) == ("big", "small")
    only_weak = load(tmp_path, weak_column="big")
    assert only_weak.strong_model == "small"


@pytest.mark.parametrize(
    ("files", "kwargs", "message"),
    [
        ({}, {}, "no .csv files"),
        ({"a.csv": "question,x,y\nq,True,False\n"}, {}, "no 'prompt' column"),
        ({"a.csv": "prompt,x\nq,True\n"}, {}, "exactly two model columns"),
        ({"a.csv": "prompt,x,y\nq,True,maybe\n"}, {}, r"a\.csv: record 0, column 'y'.*'maybe'"),
        ({"a.csv": "prompt,x,y\nq,True\n"}, {}, "missing fields"),
        ({"a.csv": "prompt,x,y\nq,True,False\n"}, {"weak_column": "z"}, "no weak model column 'z'"),
        (
            {"a.csv": "prompt,x,y\nq,True,False\n", "b.csv": "prompt,x,w\nq,True,False\n"},
            {},
            "differ",
        ),
        ({"a.csv": "prompt,x,y\n"}, {}, "no labelled prompts"),
        (
            {"a.csv": "prompt,x,y\nq,True,False\n", "bad_contaminated.jsonl": "{not json\n"},
            {},
            "not valid JSON",
        ),
        (
            {"a.csv": "prompt,x,y\nq,True,False\n", "c_contaminated.jsonl": '{"x": 1}\n'},
            {},
            "eval_prompt",
        ),
    ],
)
def test_bad_data_is_a_clear_error(
    tmp_path: Path, files: dict[str, str], kwargs: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(DataError, match=message):
        load(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nope")


def test_request_bodies_from_csv_and_jsonl(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "prompt\nhello\nworld\n")
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    write(
        tmp_path / "sub" / "t.jsonl", json.dumps(chat) + "\n\n" + json.dumps({"prompt": "x"}) + "\n"
    )
    bodies = load_request_bodies(tmp_path)
    assert bodies[0] == {"messages": [{"role": "user", "content": "hello"}]}
    assert chat in bodies
    assert {"prompt": "x"} in bodies
    assert len(bodies) == 4
    # The labelled subset works too (labels ignored, contaminated prompts left out).
    assert len(load_request_bodies(SMALL)) == len(load(SMALL))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("t.jsonl", "[1, 2]\n", "request body"),
        ("t.jsonl", '{"model": "x"}\n', "'messages' or 'prompt'"),
        ("t.jsonl", "nope\n", r"t\.jsonl:1: not valid JSON"),
        ("t.csv", "text\nhello\n", "no 'prompt' column"),
        ("t.txt", "hello\n", "no .csv or .jsonl files"),
    ],
)
def test_bad_request_samples(tmp_path: Path, name: str, text: str, message: str) -> None:
    write(tmp_path / name, text)
    with pytest.raises(DataError, match=message):
        load_request_bodies(tmp_path)
