"""``--model kvinject``: the lm-eval model that runs every adaptation condition per doc.

For each ``generate_until`` request it builds the alternative prompt and the injected segment from
the doc (contract: docs/architecture.md section 1), runs the injection engine, and returns the
baseline text carrying the doc's trace, which the adaptation task turns into metrics.
"""
import logging
import time

from lm_eval.api.model import LM

from kvinject.model_adapters.chat_turns import user_turn_frame
from kvinject.model_adapters.engine import InjectionEngine, Problem
from kvinject.model_adapters.loading import load_model_and_tokenizer
from kvinject.model_adapters.model_args import ModelArgs, parse_model_args
from kvinject.model_adapters.trace_log import TraceLog

logger = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256
_IGNORED_GEN_KWARGS = {"temperature", "top_p", "top_k"}  # greedy decoding makes them irrelevant


class TracedGeneration(str):
    """The baseline's generated text, with the doc's full trace in ``.trace``."""

    def __new__(cls, text: str, trace: dict):
        obj = super().__new__(cls, text)
        obj.trace = trace
        return obj

    def __reduce__(self):  # --use_cache and data-parallel gathering pickle responses
        return (TracedGeneration, (str(self), self.trace))


class DocError(ValueError):
    """A doc or request cannot be run; the message names the task, the doc id and the field."""


def _doc_field(task: str, doc_id, doc: dict, field: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DocError(f"task {task}, doc {doc_id}: field {field!r} must be a non-empty string (got {value!r})")
    return value


def _generation_settings(task: str, doc_id, gen_kwargs: dict) -> tuple[int, tuple[str, ...]]:
    kwargs = dict(gen_kwargs)
    if kwargs.pop("do_sample", False):
        raise DocError(f"task {task}, doc {doc_id}: kvinject decodes greedily; remove do_sample=true")
    until = kwargs.pop("until", None) or ()
    if isinstance(until, str):
        until = (until,)
    max_gen_toks = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
    if max_gen_toks < 1:
        raise DocError(f"task {task}, doc {doc_id}: max_gen_toks must be >= 1 (got {max_gen_toks})")
    unknown = set(kwargs) - _IGNORED_GEN_KWARGS
    if unknown:
        raise DocError(f"task {task}, doc {doc_id}: unsupported generation_kwargs {sorted(unknown)}")
    return max_gen_toks, tuple(until)


def problem_from_request(
    args: ModelArgs, task: str, doc: dict, context: str, gen_kwargs: dict, turn_frame: tuple[str, str] = ("", "")
) -> Problem:
    """Build the engine's input for one lm-eval request; DocError names what is wrong.

    ``turn_frame`` (before, after) wraps the injected text, e.g. as a chat-template user turn."""
    doc_id = doc.get("id", "<no id>")
    original = _doc_field(task, doc_id, doc, "original_question")
    alternative = _doc_field(task, doc_id, doc, "alternative_question")
    at = context.rfind(original)
    if at < 0:
        raise DocError(
            f"task {task}, doc {doc_id}: the prompt does not contain field 'original_question' verbatim, "
            "so the alternative prompt cannot be built; check the task's doc_to_text"
        )
    max_new_tokens, stop_sequences = _generation_settings(task, doc_id, gen_kwargs)
    return Problem(
        doc_id=str(doc_id),
        original_prompt=context,
        alternative_prompt=context[:at] + alternative + context[at + len(original) :],
        injection_text=turn_frame[0] + args.injection_template.format(alternative=alternative) + turn_frame[1],
        max_new_tokens=max_new_tokens,
        stop_sequences=stop_sequences,
    )


def generated_tokens(trace: dict) -> int:
    """Tokens the model generated for one doc over all branches (injected runs share their prefix)."""
    return sum(len(entry["post_ids"]) if "post_ids" in entry else len(entry["ids"]) for entry in trace["conditions"].values())


class KVInjectLM(LM):
    """lm-eval model adapter; ``--model_args`` are documented in model_args.ModelArgs and the README."""

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        # lm-eval adds its own batch_size/max_batch_size/device (CLI defaults 1 and cuda:0) beside
        # --model_args; a value given in --model_args is the user's explicit choice and wins.
        harness = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **harness)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def __init__(self, **model_args):
        super().__init__()
        self.args = parse_model_args(model_args)  # before any weights load
        self.model, self.tokenizer, self._device = load_model_and_tokenizer(self.args)
        self.settings = self.args.injection
        self.batch_size = self._batch_size()
        self.engine = InjectionEngine(self.model, self.tokenizer, self.settings, batch_size=self.batch_size)
        self.trace_log = TraceLog(self.args.trace_dir)
        self.turn_frame = (
            user_turn_frame(self.tokenizer, self.args.pretrained) if self.args.injection_turn == "user" else ("", "")
        )

    # lm-eval's --apply_chat_template / --fewshot_as_multiturn / --system_instruction use these three.
    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if chat_template is False or chat_template is None:
            return None
        template = getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, dict):  # several named templates: the asked-for one, else "default"
            name = chat_template if isinstance(chat_template, str) else "default"
            if name not in template:
                raise ValueError(f"chat template {name!r} not among {sorted(template)} of {self.args.pretrained}")
            return template[name]
        return template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"--apply_chat_template: the tokenizer of {self.args.pretrained} has no chat template "
                "(a base model); run without --apply_chat_template"
            )
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def _batch_size(self) -> int:
        if self.args.batch_size != "auto":
            return self.args.batch_size
        import torch

        if not self.device.startswith("cuda"):
            return min(8, self.args.max_batch_size)
        # Each doc holds a cache per branch (baseline, oracle, and injection + noise per point) for
        # about 2k positions; use half of the free memory for them.
        config = self.model.config.get_text_config()
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        bytes_per_position = 2 * config.num_hidden_layers * kv_heads * head_dim * self.model.dtype.itemsize
        branches = 2 + 2 * len(self.settings.injection_points)
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        fit = int(0.5 * free // (bytes_per_position * 2048 * branches))
        return max(1, min(fit, self.args.max_batch_size))

    def get_model_info(self) -> dict:
        return {
            "kvinject_pretrained": self.args.pretrained,
            "model_type": self.model.config.model_type,
            "dtype": str(self.model.dtype),
            "device": self.device,
            "engine_batch_size": self.batch_size,
            "trace_file": str(self.trace_log.path),
        }

    def generate_until(self, requests, disable_tqdm: bool = False):
        from tqdm import tqdm

        # Check every request before computing anything: a bad doc fails the run at once.
        problems = [
            problem_from_request(self.args, r.task_name, r.doc, r.args[0], r.args[1], self.turn_frame) for r in requests
        ]
        outputs = []
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="kvinject docs", unit="doc")
        branches = 2 + 2 * len(self.settings.injection_points)  # baseline, oracle, injection and noise per point
        started, generated = time.perf_counter(), 0
        for start in range(0, len(requests), self.batch_size):
            batch = range(start, min(start + self.batch_size, len(requests)))
            try:
                traces = self.engine.run([problems[i] for i in batch])
            except Exception as error:
                ids = ", ".join(problems[i].doc_id for i in batch)
                raise RuntimeError(
                    f"kvinject failed on doc(s) {ids} of task {requests[batch[0]].task_name}; traces of the "
                    f"{start} docs before them are in {self.trace_log.path}"
                ) from error
            for i, trace in zip(batch, traces):
                request = requests[i]
                self.trace_log.append(request.task_name, trace)
                output = TracedGeneration(trace["conditions"]["baseline"]["text"], trace)
                self.cache_hook.add_partial("generate_until", request.args, output)
                outputs.append(output)
            self.trace_log.flush()
            generated += sum(generated_tokens(trace) for trace in traces)
            progress.set_postfix(branches=branches * len(batch), tokens_per_s=f"{generated / (time.perf_counter() - started):.1f}")
            progress.update(len(batch))
        progress.close()
        return outputs

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "--model kvinject measures generation after a KV-cache injection; loglikelihood tasks are not "
            "supported (use --model hf for them)"
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "--model kvinject does not support loglikelihood_rolling tasks (use --model hf for them)"
        )
