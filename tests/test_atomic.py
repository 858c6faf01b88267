"""Atomic writes (atomic.py): an interrupted write never loses what was saved before."""

import json

import pytest

import atomic


def test_interrupted_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    target = tmp_path / "results" / "bn.json"
    atomic.write_json(target, {"final_test_accuracy": 80.0})

    write_text = type(target).write_text

    def crash(self, text, *a, **k):  # dies halfway through writing
        write_text(self, text[:5])
        raise KeyboardInterrupt

    monkeypatch.setattr(type(target), "write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json(target, {"final_test_accuracy": 1.0})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"final_test_accuracy": 80.0}
    assert [p.name for p in target.parent.iterdir()] == ["bn.json"]  # no temp file left behind
