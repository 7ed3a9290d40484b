"""The 7B-shape GPU script runs end to end on the CPU with its tiny config and prints the ratio table."""
import gpu_7b_shape


def test_gpu_script_tiny_prints_the_table(capsys):
    rows = gpu_7b_shape.main(["--tiny"])
    printed = capsys.readouterr().out
    names = [row.name for row in rows]
    for comparison in ("inject_vs_reprefill", "doc_analysis_vs_generate", "trace_size", "naive_reference",
                       "batch_scaling", "peak_memory"):
        assert any(name.startswith(comparison) for name in names), comparison
    for row in rows:
        assert row.ratio > 0 and row.name in printed
    assert "full study estimate: 1000 docs" in printed and "docs/hour" in printed


def test_seven_b_config_is_qwen25_math_7b():
    import transformers

    config = transformers.Qwen2Config(**gpu_7b_shape.QWEN25_MATH_7B)
    # 7.6e9 parameters: embeddings and lm_head untied, as in the released checkpoint.
    hidden, layers, inter, vocab, kv = 3584, 28, 18944, 152064, 4 * 128
    per_layer = hidden * (hidden + 2 * kv) + (hidden + 2 * kv) + hidden * hidden + 3 * hidden * inter + 2 * hidden
    expected = 2 * vocab * hidden + layers * per_layer + hidden
    with __import__("torch").device("meta"):
        model = transformers.Qwen2ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert config.num_key_value_heads == 4 and config.max_position_embeddings == 4096
