"""The lab: the research record behind the course (its runs' records, the lessons' experiments, the speed benchmark),
which the course's modules never import. See docs/development.md#how-the-code-is-organised."""
