"""adaptation_semantic: short-answer fact pairs (build_pairs.py writes data/semantic_pairs.json; answers.py matches answers)."""
