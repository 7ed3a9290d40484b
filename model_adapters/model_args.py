"""``--model_args`` of ``--model kvinject``: names, defaults, parsing and validation.

Everything is checked here, before any weights load, so a typo costs a second and not a model
download. lm-eval hands values over already converted by its CLI (``true`` -> True, ``8`` -> 8; see
lm_eval/_cli/utils.py) or as raw strings (``create_from_arg_string``), so every parser accepts both.

List-valued args: lm-eval's ``k=v,k=v`` form splits on commas, so injection points are written
``injection_points=5:10:15`` (``;``, ``|`` and spaces also separate); the JSON form takes a list:
``--model_args '{"pretrained": "...", "injection_points": [5, 10, 15]}'``.
"""
import dataclasses
import re
from typing import Any, Mapping

from kvinject.model_adapters.injection_settings import InjectionSettings, split_injection_points

DEFAULT_PRETRAINED = "Qwen/Qwen2.5-Math-7B"
# Framed so a base model reads it as a correction inside its own answer, followed by the whole new
# problem: the model gets the same information as the oracle prompt, only later.
DEFAULT_INJECTION_TEMPLATE = "\n\nWait, the problem has changed. The new problem is: {alternative}\nSolving the new problem:"

# With injection_turn=user the update is its own user message, so it needs no "Wait, ..." framing.
DEFAULT_USER_TURN_TEMPLATE = "The problem has changed. The new problem is: {alternative}"
INJECTION_TURNS = ("inline", "user")

DTYPES = ("auto", "float32", "bfloat16", "float16")
SCORE_DTYPES = ("model", "float32")
ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")


class ModelArgsError(ValueError):
    """A ``--model_args`` value is unknown, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class ModelArgs:
    """Validated arguments of the kvinject model adapter (see README "Model arguments")."""

    pretrained: str = DEFAULT_PRETRAINED  # Hub id, local folder, or an offline alias (smollm2-135m, gemma3-270m)
    revision: str | None = None  # Hub revision (branch, tag or commit)
    gguf_file: str | None = None  # GGUF file inside `pretrained` (needs the `gguf` package)
    dtype: str = "auto"  # auto: bfloat16 on a GPU that supports it natively, float32 otherwise
    # model: the post-injection tokens are scored in the model's dtype, inside the decoding loop;
    # float32 is accepted only with a float32 model (loading.check_score_dtype; metrics/README.md, Precision)
    score_dtype: str = "model"
    device: str = "auto"  # auto: cuda, then mps, then cpu; an unavailable device falls back with a warning
    load_in_4bit: bool = False  # bitsandbytes 4-bit weights, CUDA only
    trust_remote_code: bool = False  # run code shipped with a Hub model; off unless you trust it
    attn_implementation: str = "auto"  # auto: sdpa where the model supports it, else eager
    batch_size: int | str = 1  # docs per batch, or "auto" (sized from free memory)
    max_batch_size: int = 64  # upper bound for batch_size=auto
    # every row of a doc continues its prompts' caches, held once, instead of a copy per row: less KV
    # memory (more docs per batch_size=auto batch), a per-step copy more (README "Memory")
    share_prompts: bool = False
    injection: InjectionSettings = InjectionSettings()  # injection_points, strategy, noise, track_*, seed
    # injected text; {alternative} is the new problem. A doc's own `injection_text` field takes its place
    # (tasks whose update is not the whole new problem, e.g. adaptation_update)
    injection_template: str = DEFAULT_INJECTION_TEMPLATE
    # inline: the injected text continues the model's own (assistant) text; user: it is wrapped as a new
    # user turn in the model's chat template (chat models, with lm-eval's --apply_chat_template)
    injection_turn: str = "inline"
    trace_dir: str | None = None  # where traces are written as they are computed (default: user cache)
    result_store: str | None = None  # per-doc results for resume (default: <cache>/results.sqlite; "none": off)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ModelArgsError(f"model arg {name}={value!r}: expected true or false")


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise ModelArgsError(f"model arg {name}={value!r}: expected an integer")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except ValueError:
        number = None
    if number is None:
        raise ModelArgsError(f"model arg {name}={value!r}: expected an integer")
    if number < minimum:
        raise ModelArgsError(f"model arg {name}={value!r}: must be >= {minimum}")
    return number


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ModelArgsError(f"model arg {name}={value!r}: expected one of {', '.join(choices)}")
    return value


def _as_optional_str(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ModelArgsError(f"model arg {name}={value!r}: expected a string")
    return value


def _as_injection_points(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        items = split_injection_points(value)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    return tuple(_as_int("injection_points", item, minimum=0) for item in items)  # the rest: InjectionSettings


def _as_batch_size(value: Any) -> int | str:
    # lm-eval passes "auto" or "auto:N" (N re-detections) as strings; N is irrelevant for one pass.
    if isinstance(value, str) and (value == "auto" or value.startswith("auto:")):
        return "auto"
    return _as_int("batch_size", value, minimum=1)


def _as_device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ModelArgsError(f"model arg device={value!r}: expected auto, cpu, mps, cuda or cuda:N")
    return value


def _as_template(value: Any) -> str:
    if not isinstance(value, str) or "{alternative}" not in value:
        raise ModelArgsError(
            f"model arg injection_template={value!r}: must be a string containing {{alternative}}"
        )
    try:
        value.format(alternative="")
    except (KeyError, IndexError, ValueError) as error:
        raise ModelArgsError(
            f"model arg injection_template={value!r}: only {{alternative}} may be a placeholder ({error})"
        ) from None
    return value


_PARSERS = {
    "pretrained": lambda v: _as_optional_str("pretrained", v) or DEFAULT_PRETRAINED,
    "revision": lambda v: _as_optional_str("revision", v),
    "gguf_file": lambda v: _as_optional_str("gguf_file", v),
    "dtype": lambda v: _as_choice("dtype", v, DTYPES),
    "score_dtype": lambda v: _as_choice("score_dtype", v, SCORE_DTYPES),
    "device": _as_device,
    "load_in_4bit": lambda v: _as_bool("load_in_4bit", v),
    "trust_remote_code": lambda v: _as_bool("trust_remote_code", v),
    "attn_implementation": lambda v: _as_choice("attn_implementation", v, ATTENTION_IMPLEMENTATIONS),
    "batch_size": _as_batch_size,
    "max_batch_size": lambda v: _as_int("max_batch_size", v, minimum=1),
    "share_prompts": lambda v: _as_bool("share_prompts", v),
    "injection_template": _as_template,
    "trace_dir": lambda v: _as_optional_str("trace_dir", v),
    "result_store": lambda v: _as_optional_str("result_store", v),
    "injection_turn": lambda v: _as_choice("injection_turn", v, INJECTION_TURNS),
}
# The injection settings are given as flat model args and validated by InjectionSettings itself.
_INJECTION_PARSERS = {
    "injection_points": _as_injection_points,
    "strategy": lambda v: v,
    "noise": lambda v: v,
    "track_attention": lambda v: _as_bool("track_attention", v),
    "track_hidden": lambda v: _as_bool("track_hidden", v),
    "seed": lambda v: _as_int("seed", v, minimum=0),
}
VALID_NAMES = tuple(field.name for field in dataclasses.fields(ModelArgs) if field.name != "injection") + tuple(
    field.name for field in dataclasses.fields(InjectionSettings)
)
assert set(_PARSERS) | set(_INJECTION_PARSERS) == set(VALID_NAMES), "every model arg needs a parser"


def parse_model_args(raw: Mapping[str, Any]) -> ModelArgs:
    """Validate raw ``--model_args`` (values may be strings or already converted).

    ``None`` values mean "not given" (lm-eval passes ``device=None`` etc. when unset).
    Raises ModelArgsError naming the argument and the reason.
    """
    unknown = sorted(name for name in raw if name not in VALID_NAMES)
    if unknown:
        raise ModelArgsError(
            f"unknown model arg(s) {', '.join(unknown)} for --model kvinject; valid: {', '.join(VALID_NAMES)}"
        )
    given = {name: value for name, value in raw.items() if value is not None}
    values = {name: _PARSERS[name](value) for name, value in given.items() if name in _PARSERS}
    injection = {name: _INJECTION_PARSERS[name](value) for name, value in given.items() if name in _INJECTION_PARSERS}
    try:
        values["injection"] = InjectionSettings(**injection)
    except ValueError as error:
        raise ModelArgsError(f"model arg {error}") from None
    if values.get("injection_turn") == "user" and "injection_template" not in values:
        values["injection_template"] = DEFAULT_USER_TURN_TEMPLATE
    args = ModelArgs(**values)
    if args.attn_implementation == "flash_attention_2" and args.dtype == "float32":
        raise ModelArgsError("model arg attn_implementation=flash_attention_2 needs dtype=bfloat16 or float16 (it has "
                             "no float32 kernel); use attn_implementation=sdpa with float32")
    if args.load_in_4bit and args.gguf_file:
        raise ModelArgsError("model args load_in_4bit and gguf_file cannot be combined: a GGUF file is already quantised")
    if args.injection.strategy == "replace" and args.injection_turn != "inline":
        raise ModelArgsError("model arg injection_turn=user has no effect with strategy=replace (the prompt itself is swapped)")
    if args.injection.strategy == "replace" and args.injection_template != DEFAULT_INJECTION_TEMPLATE:
        raise ModelArgsError("model arg injection_template has no effect with strategy=replace (the prompt itself is swapped)")
    return args
