"""The benchmark (lab/benchmark.py): its sections in order, each row against its section's first, and a budget."""

import pytest

from lab import benchmark
from conftest import write_tree


def run(tmp_path, *flags):
    tree = write_tree(tmp_path / "tree", n_train=52, n_test=2)  # 520 images: a row's steps and the public warm-up
    report = tmp_path / "benchmark.txt"
    benchmark.main(["--data", str(tree), "--device", "cpu", "--norms", "gn", "--steps", "1", "--public-steps", "1",
                    "--amp", "off", "--report", str(report), *flags])
    return report.read_text().splitlines()


def test_benchmark_reports_its_sections_in_order_with_ratios_to_each_first_row(tmp_path):
    lines = run(tmp_path)
    titles = [line for line in lines if line[:2] in ("1.", "2.", "3.", "4.", "5.", "6.")]
    assert [t[:2] for t in titles] == ["1.", "2.", "5.", "6."]  # 3 and 4 are CUDA's
    recipe = [line for line in lines[lines.index(titles[0]):lines.index(titles[1])] if "GroupNorm" in line]
    assert [row.split(",")[0] for row in recipe] == ["Muon per kernel", "Muon batched"]
    first, second = (float(row.split()[-2]) for row in recipe)  # images/s
    ratio = float(recipe[1].split()[-1].rstrip("x"))
    assert recipe[0].endswith("1.00x") and ratio == pytest.approx(second / first, abs=0.01)  # images/s are rounded
    per_kernel, batched = (lines[lines.index(titles[1]) + k].split() for k in (2, 3))
    assert int(batched[-2]) < 250 < int(per_kernel[-2])  # all operations of a step: the batched path's target
    public = [line for line in lines[lines.index(titles[3]):] if "GroupNorm" in line]
    assert [row.split(":")[0] for row in public] == ["public", "suite"] and public[0].endswith("1.00x")
    assert lines[-1] == "GPU: none on this machine"


def test_a_spent_budget_stops_the_benchmark_and_keeps_what_it_measured(tmp_path):
    lines = run(tmp_path, "--budget", "0.001")
    assert lines[-3:] == ["(the budget of 0.001 s is spent: stopped here)", "", "GPU: none on this machine"]
    assert "GroupNorm" in lines[-4] and not any(line.startswith("2.") for line in lines)  # stopped after one row
