"""``--model kvinject``: the lm-eval model that runs every adaptation condition per doc.

For each ``generate_until`` request it builds the alternative prompt and the injected segment from
the doc (contract: docs/architecture.md section 1), runs the injection engine, and returns the
baseline text carrying the doc's trace, which the adaptation task turns into metrics.
"""
import dataclasses
import json
import logging
import time

from lm_eval.api.model import LM

from kvinject.model_adapters.chat_turns import user_turn_frame
from kvinject.model_adapters.distributed import ProcessGroup
from kvinject.model_adapters.engine import InjectionEngine, Problem
from kvinject.model_adapters.engine.tokens import eos_ids
from kvinject.model_adapters.loading import load_model_and_tokenizer, weights_location
from kvinject.model_adapters.memory import (
    device_free_bytes,
    doc_shape,
    fitting_batch_size,
    free_memory,
    hidden_layers,
    is_out_of_memory,
    kv_bytes_per_position,
)
from kvinject.model_adapters.model_args import ModelArgs, parse_model_args
from kvinject.model_adapters.result_store import ResultStore
from kvinject.model_adapters.run_fingerprint import digest, doc_key, run_fingerprint
from kvinject.model_adapters.trace_log import TraceLog
from kvinject.paths import user_cache_dir
from kvinject.trace_schema import validate_trace

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


def no_eos_message(pretrained: str) -> str:
    """The warning for a model whose tokenizer and generation config name no EOS token."""
    return (
        f"the tokenizer of pretrained={pretrained} has no EOS token and the model's generation_config names "
        "none: generations stop only at the task's stop sequences (until) or after max_gen_toks tokens"
    )


def _doc_field(task: str, doc_id, doc: dict, field: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DocError(f"task {task}, doc {doc_id}: field {field!r} must be a non-empty string (got {value!r})")
    return value


def _generation_settings(task: str, doc_id, gen_kwargs: dict, points: tuple[int, ...]) -> tuple[int, tuple[str, ...]]:
    kwargs = dict(gen_kwargs)
    if kwargs.pop("do_sample", False):
        raise DocError(f"task {task}, doc {doc_id}: kvinject decodes greedily; remove do_sample=true")
    until = kwargs.pop("until", None) or ()
    if isinstance(until, str):
        until = (until,)
    max_gen_toks = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
    if max_gen_toks < 1:
        raise DocError(f"task {task}, doc {doc_id}: max_gen_toks must be >= 1 (got {max_gen_toks})")
    if max_gen_toks <= max(points):
        raise DocError(
            f"task {task}, doc {doc_id}: max_gen_toks={max_gen_toks} leaves no tokens after the largest injection "
            f"point {max(points)}; raise max_gen_toks (--gen_kwargs max_gen_toks=N) or lower injection_points"
        )
    unknown = set(kwargs) - _IGNORED_GEN_KWARGS
    if unknown:
        raise DocError(f"task {task}, doc {doc_id}: unsupported generation_kwargs {sorted(unknown)}")
    return max_gen_toks, tuple(until)


def injected_text(args: ModelArgs, task: str, doc_id, doc: dict, turn_frame: tuple[str, str]) -> str:
    """The doc's own ``injection_text`` when it has one (a task whose update is not the whole alternative
    problem, e.g. adaptation_update), else the model's injection_template around the alternative problem.
    A user turn carries the doc's text without its surrounding whitespace, as the user-turn template does."""
    if "injection_text" not in doc:
        return args.injection_template.format(alternative=_doc_field(task, doc_id, doc, "alternative_question"))
    text = _doc_field(task, doc_id, doc, "injection_text")
    return text.strip() if turn_frame != ("", "") else text


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
    max_new_tokens, stop_sequences = _generation_settings(task, doc_id, gen_kwargs, args.injection.injection_points)
    return Problem(
        doc_id=str(doc_id),
        original_prompt=context,
        alternative_prompt=context[:at] + alternative + context[at + len(original) :],
        injection_text=turn_frame[0] + injected_text(args, task, doc_id, doc, turn_frame) + turn_frame[1],
        max_new_tokens=max_new_tokens,
        stop_sequences=stop_sequences,
    )


def generated_tokens(trace: dict) -> int:
    """Tokens the model generated for one doc over all branches (injected runs share their prefix)."""
    return sum(len(entry["post_ids"]) if "post_ids" in entry else len(entry["ids"]) for entry in trace["conditions"].values())


def first_occurrences(requests) -> tuple[dict[int, int], list[int]]:
    """(id(request) -> index of its first occurrence, those indices in order): lm-eval repeats the
    same Instance object for repeats > 1, and a repeat is run and logged once."""
    first = {}
    for i, request in enumerate(requests):
        first.setdefault(id(request), i)
    return first, sorted(set(first.values()))


class TraceSpool:
    """Appends traces to the trace log in ``order`` (request indices) as soon as every earlier one is
    known, so the file holds the finished docs in request order even when a later batch fails."""

    def __init__(self, trace_log, requests, order: list[int]):
        self.trace_log, self.requests, self.order, self.written = trace_log, requests, order, 0

    def write_ready(self, traces: dict[int, dict]) -> None:
        while self.written < len(self.order) and self.order[self.written] in traces:
            index = self.order[self.written]
            self.trace_log.append(self.requests[index].task_name, traces[index])
            self.written += 1
        self.trace_log.flush()


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
        from kvinject.lm_eval_internals import require_hooks

        require_hooks()  # an lm-eval this plugin cannot hook into stops here, naming the missing symbol
        super().__init__()
        args = parse_model_args(model_args)  # before any weights load
        self.processes = ProcessGroup(args.device)  # lm-eval sees one process: the adapter splits the docs itself
        self.args = dataclasses.replace(args, device=self.processes.device_for(args.device))
        self.model, self.tokenizer, self._device = load_model_and_tokenizer(self.args)
        if not eos_ids(self.tokenizer, self.model):
            logger.warning(no_eos_message(self.args.pretrained))
        self.settings = self.args.injection
        self.batch_size = self._batch_size()
        self.engine = InjectionEngine(self.model, self.tokenizer, self.settings, batch_size=self.batch_size,
                                      share_prompts=self.args.share_prompts)
        # With several processes each spools the docs it computes; rank 0 writes the run's trace file.
        self.trace_log = TraceLog(self.args.trace_dir)
        self._merged_log = None
        self.fingerprint = digest(run_fingerprint(self.args, weights_location(self.args)[0], self.model, self.device))
        self.open_result_store(self.args.result_store)
        self.docs_reused = self.docs_computed = 0
        self.turn_frame = (
            user_turn_frame(self.tokenizer, self.args.pretrained) if self.args.injection_turn == "user" else ("", "")
        )

    def open_result_store(self, path: str | None):
        """Use the per-doc store at ``path`` (default: the user cache; "none": no store)."""
        off = path is not None and path.lower() in ("none", "off", "false")
        self.store = None if off else ResultStore(path or user_cache_dir() / "results.sqlite")
        return self.store

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
        if not self.device.startswith("cuda"):
            return min(8, self.args.max_batch_size)
        return self.args.max_batch_size  # sized from the docs themselves in generate_until (_size_auto_batch)

    def _size_auto_batch(self, problems: list[Problem]) -> None:
        """batch_size=auto on a GPU: the most docs whose peak caches fit in the free memory, from these
        docs' own lengths (memory.py); never more than a size an out-of-memory error already halved."""
        free = device_free_bytes(self.device) if self.args.batch_size == "auto" else None
        if free is None or not problems:
            return
        position = kv_bytes_per_position(self.model.config, self.model.dtype.itemsize)  # scoring rows too
        shapes = [doc_shape(self.tokenizer, problem, self.settings.strategy, len(self.settings.injection_points))
                  for problem in problems]
        self.batch_size = self.engine.batch_size = min(
            self.batch_size, fitting_batch_size(free, shapes, position, position, hidden_layers(self.model.config),
                                                   self.args.share_prompts, self.args.max_batch_size))

    def get_model_info(self) -> dict:
        return {
            "kvinject_pretrained": self.args.pretrained,
            "model_type": self.model.config.model_type,
            "dtype": str(self.model.dtype),
            "device": self.device,
            "engine_batch_size": self.batch_size,
            "trace_file": str((self._merged_log or self.trace_log).path),
            "result_store": str(self.store.path) if self.store else None,
            "docs_reused_from_store": self.docs_reused,
            "docs_computed": self.docs_computed,
            "world_size": self.processes.world_size,
        }

    def generate_until(self, requests, disable_tqdm: bool = False):
        problems = self._checked_problems(requests)  # a bad request fails the run before any compute
        first, distinct = first_occurrences(requests)  # a request repeated in the list runs once
        keys = {i: doc_key(self.fingerprint, problems[i]) for i in distinct}
        traces = self._stored_traces(keys)
        # Decided once for all processes: each read the store at its own moment (distributed.py).
        pending = self.processes.agreed_pending([i for i in distinct if i not in traces])
        self._check_tokenised(requests, problems, pending)
        assigned = self.processes.share(pending)
        mine = [i for i in assigned if i not in traces]  # a doc this process read as stored is not recomputed
        self._size_auto_batch([problems[i] for i in mine])
        # One process: the spool is the run's trace file, reused and computed docs in request order.
        # Several: each spools the docs it computes, and rank 0 writes the trace file at the end.
        spool = TraceSpool(self.trace_log, requests, distinct if self.processes.world_size == 1 else mine)
        spool.write_ready(traces)
        self._compute_docs(requests, problems, mine, keys, traces, spool, disable_tqdm)
        if self.processes.world_size > 1:
            self._gather_traces(requests, distinct, assigned, traces)
        outputs = [TracedGeneration(traces[first[id(r)]]["conditions"]["baseline"]["text"], traces[first[id(r)]])
                   for r in requests]
        for i in distinct:
            self.cache_hook.add_partial("generate_until", requests[i].args, outputs[i])
        return outputs

    def _checked_problems(self, requests) -> list[Problem]:
        return [problem_from_request(self.args, r.task_name, r.doc, r.args[0], r.args[1], self.turn_frame)
                for r in requests]

    def _stored_traces(self, keys: dict[int, str]) -> dict[int, dict]:
        """The traces the result store holds, by request index."""
        if self.store is None:
            return {}
        stored = self.store.get_many(list(keys.values()))
        traces = {i: stored[key] for i, key in keys.items() if key in stored}
        self.docs_reused += len(traces)
        if traces:
            logger.warning("kvinject: %d of %d docs reused from the result store %s", len(traces), len(keys), self.store.path)
        return traces

    def _check_tokenised(self, requests, problems, pending: list[int]) -> None:
        """The engine's tokenised checks (context length, empty segments) of every doc to compute."""
        for i in pending:
            try:
                self.engine.check([problems[i]])
            except ValueError as error:
                raise DocError(f"task {requests[i].task_name}, {error}") from None

    def _compute_docs(self, requests, problems, mine: list[int], keys, traces: dict, spool, disable_tqdm: bool):
        """Compute this process's docs batch by batch into ``traces``, storing and spooling each batch."""
        from tqdm import tqdm

        progress = tqdm(total=len(mine), disable=disable_tqdm or self.processes.rank != 0, desc="kvinject docs", unit="doc")
        branches = 2 + 2 * len(self.settings.injection_points)  # baseline, oracle, injection and noise per point
        started, generated = time.perf_counter(), 0
        done = 0
        while done < len(mine):
            batch = mine[done : done + self.batch_size]
            computed = self._compute(requests, problems, batch, finished=len(traces))
            if computed is None:  # out of memory: retry with the smaller batch size
                continue
            generated += sum(generated_tokens(trace) for trace in computed)
            progress.set_postfix(branches=branches * len(batch), tokens_per_s=f"{generated / (time.perf_counter() - started):.1f}")
            if self.store is not None:
                self.store.put_many([(keys[i], trace) for i, trace in zip(batch, computed)])
            traces.update(zip(batch, computed))
            done += len(batch)
            self.docs_computed += len(batch)
            spool.write_ready(traces)
            progress.update(len(batch))
        progress.close()

    def _gather_traces(self, requests, distinct: list[int], assigned: list[int], traces: dict) -> None:
        for computed_elsewhere in self.processes.all_gather_object({i: traces[i] for i in assigned}):
            traces.update(computed_elsewhere)
        self._publish_all_traces(requests, distinct, traces)

    def _compute(self, requests, problems, batch: list[int], finished: int):
        """The traces of the docs at ``batch``; None when batch_size=auto had to shrink the batch."""
        out_of_memory = False
        try:
            traces = self.engine.run([problems[i] for i in batch])
        except Exception as error:
            if not is_out_of_memory(error):
                ids = ", ".join(problems[i].doc_id for i in batch)
                where = f" and in the result store {self.store.path}" if self.store is not None else ""
                raise RuntimeError(
                    f"kvinject failed on doc(s) {ids} of task {requests[batch[0]].task_name}; traces of the "
                    f"{finished} docs before them are in {self.trace_log.path}{where}"
                ) from error
            out_of_memory = True  # handled below: inside the except its traceback still holds the batch's tensors
        if out_of_memory:
            free_memory()
            if self.args.batch_size != "auto" or len(batch) == 1:
                raise RuntimeError(
                    f"kvinject ran out of memory on doc(s) {', '.join(problems[i].doc_id for i in batch)} with "
                    f"batch_size={len(batch)}; use batch_size=auto or a smaller batch_size (finished "
                    "docs are kept in the result store and reused when the run is restarted)"
                )
            self.batch_size = self.engine.batch_size = max(1, len(batch) // 2)
            logger.warning("kvinject: out of memory with %d docs per batch; retrying with %d", len(batch), self.batch_size)
            return None
        # Through JSON and back, so a computed trace is exactly what a resumed run reads from the store.
        traces = [json.loads(json.dumps(trace, ensure_ascii=False)) for trace in traces]
        for i, trace in zip(batch, traces):
            try:
                validate_trace(trace)
            except ValueError as error:
                raise DocError(
                    f"task {requests[i].task_name}, doc {problems[i].doc_id}: the model's outputs give an invalid "
                    f"trace ({error}); non-finite values mean NaN or inf logits, try dtype=float32"
                ) from None
        return traces

    def _publish_all_traces(self, requests, distinct: list[int], traces: dict) -> None:
        if self.processes.rank != 0:
            return
        if self._merged_log is None:
            self._merged_log = TraceLog(self.args.trace_dir)
        for i in distinct:
            self._merged_log.append(requests[i].task_name, traces[i])
        self._merged_log.flush()

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "--model kvinject measures generation after a KV-cache injection; loglikelihood tasks are not "
            "supported (use --model hf for them)"
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "--model kvinject does not support loglikelihood_rolling tasks (use --model hf for them)"
        )
