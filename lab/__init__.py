"""The lab: the research record behind the course. Its runs' records (results.py), the lessons' experiments
and the words and figures drawn from them (experiments.py, figures.py), and the speed benchmark
(benchmark.py). The course (the top-level modules) never imports it.

    python -m lab EXPERIMENT --data ../shared/data/cifar10-jpg.tar.gz   # one lesson experiment (--help lists them)
    python -m lab.benchmark --data ../shared/data/cifar10-jpg.tar.gz    # the speed benchmark
"""
