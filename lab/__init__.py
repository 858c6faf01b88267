"""The lab: the research record behind the course (its runs' records, the lessons' experiments, the speed benchmark)."""
