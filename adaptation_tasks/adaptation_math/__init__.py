"""adaptation_math: augmented MAWPS (data.py builds and caches the set; answers.py matches answers)."""
