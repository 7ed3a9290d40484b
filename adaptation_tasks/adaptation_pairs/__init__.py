"""adaptation_pairs: your own (original, alternative, answers) pairs as an adaptation task."""
