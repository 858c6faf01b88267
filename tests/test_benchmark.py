"""The throughput benchmark (benchmark.py): the public pipeline and this suite's, side by side."""

import benchmark
from conftest import write_tree


def test_benchmark_reports_each_pipeline_against_the_public_one(tmp_path):
    tree = write_tree(tmp_path / "tree", n_train=52, n_test=2)  # 8 batches of 64: warm-up and 2 timed steps
    report = tmp_path / "benchmark.txt"
    benchmark.main(["--data", str(tree), "--norms", "gn", "--steps", "2", "--images", "64", "--amp", "off",
                    "--report", str(report)])
    rows = [line for line in report.read_text().splitlines() if "GroupNorm" in line]
    assert [row.split(",")[0] for row in rows] == ["public: PIL transforms", "suite: uint8"]
    assert rows[1].split("GroupNorm")[0].rstrip().endswith(", muon, ws") and " fp32 " in rows[1]  # GroupNorm's recipe
    public, suite = (float(row.split()[-3]) for row in rows)
    assert rows[0].endswith("1.00x") and rows[1].endswith(f"{suite / public:.2f}x")
