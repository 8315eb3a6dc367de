import pytest

from bridge.globs import matches


@pytest.mark.parametrize("path, pattern, expected", [
    ("samples_x.jsonl", "**/samples_*.jsonl", True),
    ("a/b/samples_x.jsonl", "**/samples_*.jsonl", True),
    ("a/results_x.json", "**/samples_*.jsonl", False),
    ("a/b.json", "*.json", False),
    ("b.json", "*.json", True),
    ("details/m/x.parquet", "details/**", True),
    ("details_x.parquet", "details/**", False),
    ("a/b.c", "a/?.c", True),
    ("a[1].json", "a[1].json", True),
], ids=["root-doublestar", "nested-doublestar", "other-name", "star-stays-in-folder", "star-root", "trailing-doublestar",
        "prefix-only", "question-mark", "brackets-literal"])
def test_matches(path, pattern, expected):
    assert matches(path, [pattern]) is expected
