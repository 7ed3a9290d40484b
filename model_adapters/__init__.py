"""Everything that touches the model: loading, --model_args, the injection engine, the lm-eval adapter."""
