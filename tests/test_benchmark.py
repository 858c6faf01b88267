"""The throughput benchmark (benchmark.py): it measures the old recipe and today's and says what the change costs."""

import pytest

import benchmark
from conftest import write_tree


def test_benchmark_reports_each_pipeline_and_the_recipe_against_sgd(tmp_path):
    tree = write_tree(tmp_path / "tree", n_train=52, n_test=2)  # 8 batches of 64: warm-up and 2 timed steps
    report = tmp_path / "benchmark.txt"
    benchmark.main(["--data", str(tree), "--norms", "gn", "--steps", "2", "--images", "64", "--amp", "off",
                    "--report", str(report)])
    lines = report.read_text().splitlines()
    rows = [line for line in lines if "GroupNorm" in line]
    assert [row.split(",")[0] for row in rows[:3]] == ["public: PIL transforms", "suite: uint8", "suite: uint8"]
    assert rows[1].split("GroupNorm")[0].rstrip().endswith(", sgd")  # the old recipe: plain convs
    assert rows[2].split("GroupNorm")[0].rstrip().endswith(", muon, ws") and " fp32 " in rows[2]  # GroupNorm's today
    assert rows[0].endswith("1.00x") and rows[3].startswith("  recipe / sgd images per second")
    sgd, muon = (float(row.split()[-3]) for row in rows[1:3])
    reported = float(rows[3].split()[-1].rstrip("x"))  # from the unrounded rates: allow the rows' rounding
    assert reported == pytest.approx(muon / sgd, abs=0.01 + muon / sgd * 2 / min(muon, sgd))
