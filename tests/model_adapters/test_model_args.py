import pytest

from kvinject.model_adapters.injection_settings import split_injection_points
from kvinject.model_adapters.model_args import (
    DEFAULT_PRETRAINED,
    VALID_NAMES,
    ModelArgs,
    ModelArgsError,
    parse_model_args,
)


def test_defaults_are_the_7b_study():
    args = parse_model_args({})
    assert args == ModelArgs()
    assert args.pretrained == DEFAULT_PRETRAINED == "Qwen/Qwen2.5-Math-7B"
    assert args.injection.injection_points == (5, 10, 15)
    assert args.trust_remote_code is False


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ModelArgsError) as error:
        parse_model_args({"pretrianed": "x"})
    message = str(error.value)
    assert "pretrianed" in message
    for name in VALID_NAMES:
        assert name in message


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"dtype": "float64"}, "dtype='float64'"),
        ({"device": "gpu"}, "device='gpu'"),
        ({"batch_size": 0}, "batch_size=0: must be >= 1"),
        ({"batch_size": "big"}, "batch_size='big': expected an integer"),
        ({"injection_points": "5:x"}, "injection_points='x'"),
        ({"injection_points": "-1"}, "must be >= 0"),
        ({"injection_points": "5:5"}, "distinct"),
        ({"strategy": "insert"}, "strategy='insert'"),
        ({"noise": "gaussian"}, "noise='gaussian'"),
        ({"track_attention": "maybe"}, "track_attention='maybe'"),
        ({"injection_template": "no placeholder"}, "{alternative}"),
        ({"injection_template": "{alternative} {other}"}, "only {alternative}"),
        ({"load_in_4bit": True, "gguf_file": "m.gguf"}, "cannot be combined"),
        ({"seed": 1.5}, "seed=1.5"),
    ],
)
def test_bad_values_name_the_argument(raw, fragment):
    with pytest.raises(ModelArgsError) as error:
        parse_model_args(raw)
    assert fragment in str(error.value)


def test_key_value_and_json_forms_agree():
    # lm-eval's CLI turns "5" into 5 and "true" into True; the Python API passes raw strings.
    from_cli = parse_model_args({"injection_points": "3:7", "track_hidden": False, "batch_size": 4})
    from_string = parse_model_args({"injection_points": "3;7", "track_hidden": "false", "batch_size": "4"})
    from_json = parse_model_args({"injection_points": [7, 3], "track_hidden": False, "batch_size": 4})
    assert from_cli == from_string == from_json
    assert from_json.injection.injection_points == (3, 7)


def test_single_point_and_auto_batch_size():
    args = parse_model_args({"injection_points": 8, "batch_size": "auto:4"})
    assert args.injection.injection_points == (8,)
    assert args.batch_size == "auto"


def test_lm_eval_none_means_not_given():
    assert parse_model_args({"device": None, "batch_size": None}) == ModelArgs()


@pytest.mark.parametrize("text", ["5:10:15", "5,10,15", " 5; 10 | 15 ", "5 10\t15"])
def test_one_grammar_for_written_injection_points(text):
    """--model_args (5:10:15) and the commands' flags (5,10,15) read points with the same function."""
    assert split_injection_points(text) == ["5", "10", "15"]
    assert parse_model_args({"injection_points": text.replace(",", ":")}).injection.injection_points == (5, 10, 15)
