"""The mistake browser (explorer.py)."""

import pytest

import explorer
from conftest import CLASSES, fake_mistakes


def test_explorer_selects_by_true_and_predicted_class():
    items = fake_mistakes(12)  # true k % 10, predicted (k + 1) % 10
    assert [i["index"] for i in explorer.select(items, CLASSES, "airplane")] == [0, 10]
    assert [i["index"] for i in explorer.select(items, CLASSES, explorer.ANY, "automobile")] == [0, 10]
    assert explorer.select(items, CLASSES, "cat", "cat") == []
    assert len(explorer.select(items, CLASSES)) == 12


def test_explorer_widget_follows_the_controls():
    widgets = pytest.importorskip("ipywidgets")
    box = explorer.mistake_explorer(fake_mistakes(12), CLASSES)
    (true, predicted), (slider, count), _ = (c.children if hasattr(c, "children") else c for c in box.children)
    assert isinstance(box, widgets.VBox) and count.value.startswith("12 mistakes")
    true.value = "airplane"
    assert count.value.startswith("2 mistakes") and slider.max == 1
    predicted.value = "cat"
    assert count.value.startswith("0 mistakes") and slider.max == 0
