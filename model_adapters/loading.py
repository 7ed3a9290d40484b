"""Load the causal LM and tokenizer that ``--model_args`` describe (already validated)."""
import importlib.util
import logging
import warnings
from pathlib import Path

from kvinject.model_adapters.model_args import ModelArgs, ModelArgsError
from kvinject.model_adapters.offline_models import OFFLINE_MODELS, safetensors_copy_of_gguf

logger = logging.getLogger(__name__)


def _available_devices():
    import torch

    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices + ["cpu"]


def resolve_device(requested: str) -> str:
    """``auto`` picks cuda, then mps, then cpu. An unavailable device falls back with a warning,
    because lm-eval's CLI passes ``cuda:0`` by default even on machines without CUDA."""
    import torch

    available = _available_devices()
    if requested == "auto":
        return available[0]
    kind = requested.split(":")[0]
    if kind == "cuda" and "cuda" in available:
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index < torch.cuda.device_count():
            return requested
    elif kind in available:
        return requested
    warnings.warn(f"device={requested} is not available here; using {available[0]} instead", stacklevel=2)
    return available[0]


def native_bf16(device: str) -> bool:
    """Whether the GPU ``device`` computes bfloat16 natively (compute capability 8.0, Ampere, or newer);
    older GPUs emulate it, slowly and with other rounding than the runs it would be compared with."""
    import torch

    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index) >= (8, 0)


def resolve_dtype(requested: str, device: str):
    """The torch dtype for ``dtype=requested`` on ``device``: ``auto`` is bfloat16 on a GPU with native bfloat16,
    else float32; bfloat16 without native support falls back to float16 with a warning."""
    import torch

    on_gpu = device.startswith("cuda")
    if requested == "auto":
        # The measures are KL divergences between nearly equal distributions: keep fp32 where bf16
        # would be emulated or unsupported (CPU, MPS, old GPUs).
        return torch.bfloat16 if on_gpu and native_bf16(device) else torch.float32
    if requested == "bfloat16" and on_gpu and not native_bf16(device):
        warnings.warn(f"dtype=bfloat16: {device} has no native bfloat16 (compute capability < 8.0); using "
                      "float16 instead (dtype=float32 for the most exact measures)", stacklevel=2)
        return torch.float16
    return getattr(torch, requested)


def check_attention_dtype(attn_implementation: str, dtype) -> None:
    """flash_attention_2 has 16-bit kernels only: refuse float32 before any weights load."""
    import torch

    if attn_implementation == "flash_attention_2" and dtype == torch.float32:
        raise ModelArgsError(
            "model arg attn_implementation=flash_attention_2 needs dtype=bfloat16 or float16 (it has no float32 "
            "kernel); use attn_implementation=sdpa with float32"
        )


def check_score_dtype(score_dtype: str, dtype) -> None:
    """The engine scores inside its one decoding loop, in the forwards that decode: a 16-bit model
    cannot score in float32 there. Refused before any weights load."""
    import torch

    if score_dtype == "float32" and dtype != torch.float32:
        raise ModelArgsError(
            f"model arg score_dtype=float32 needs a float32 model, but dtype resolves to "
            f"{str(dtype).removeprefix('torch.')}: the engine scores the post-injection tokens in the same "
            "forwards that decode them, in the model's dtype; use dtype=float32 for float32 measures, or "
            "score_dtype=model (metrics/README.md, Precision)"
        )


def _require_gguf(arg: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelArgsError(f"model arg {arg} needs the gguf package: pip install 'kvinject[gguf]'")


def missing_model_folder(pretrained: str) -> bool:
    """``pretrained`` names a local folder (it starts with /, ./, ../ or ~) that does not exist."""
    return pretrained.startswith(("/", "./", "../", "~")) and not Path(pretrained).expanduser().is_dir()


def weights_location(args: ModelArgs):
    """(folder or hub id, gguf file name or None) for ``pretrained``."""
    if args.pretrained in OFFLINE_MODELS:
        gguf = OFFLINE_MODELS[args.pretrained].gguf_path()
        _require_gguf(f"pretrained={args.pretrained}")  # the first load converts the GGUF file
        return str(safetensors_copy_of_gguf(gguf)), None
    if missing_model_folder(args.pretrained):
        raise FileNotFoundError(_cannot_load(args.pretrained, "no such model folder"))
    if args.gguf_file:
        _require_gguf("gguf_file")
    return str(Path(args.pretrained).expanduser()) if args.pretrained.startswith("~") else args.pretrained, args.gguf_file


def _cannot_load(pretrained: str, reason) -> str:
    return (
        f"cannot load pretrained={pretrained}: {reason}\nWithout a connection to the Hugging Face Hub, give "
        f"a local folder, or one of the offline models: {', '.join(OFFLINE_MODELS)}"
    )


def _quantization_config(args: ModelArgs, device: str, dtype):
    if not args.load_in_4bit:
        return None
    if not device.startswith("cuda"):
        raise ModelArgsError(f"model arg load_in_4bit=true needs a CUDA GPU (device is {device})")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelArgsError("model arg load_in_4bit=true needs bitsandbytes: pip install 'kvinject[quant]'")
    from transformers import BitsAndBytesConfig

    # The 4-bit weights are dequantised to the compute dtype: the run's dtype, as for unquantised weights.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype)


def load_model_and_tokenizer(args: ModelArgs):
    """Return ``(model, tokenizer, device)``; the model is in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    check_attention_dtype(args.attn_implementation, dtype)
    check_score_dtype(args.score_dtype, dtype)
    location, gguf_file = weights_location(args)
    common = {"revision": args.revision, "trust_remote_code": args.trust_remote_code}
    if gguf_file:
        common["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
    except OSError as error:  # the Hub is unreachable, or the id or folder does not exist
        raise OSError(_cannot_load(args.pretrained, error)) from error
    quantization = _quantization_config(args, device, dtype)
    model_kwargs = dict(common, dtype=dtype)
    if quantization is not None:
        model_kwargs.update(quantization_config=quantization, device_map={"": device})
    if args.attn_implementation == "auto":
        try:
            model = AutoModelForCausalLM.from_pretrained(location, attn_implementation="sdpa", **model_kwargs)
        except ValueError as error:  # the architecture has no SDPA kernel
            logger.info("sdpa attention unavailable (%s); using eager", error)
            model = AutoModelForCausalLM.from_pretrained(location, attn_implementation="eager", **model_kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            location, attn_implementation=args.attn_implementation, **model_kwargs
        )
    if quantization is None:
        model.to(device)
    model.eval()
    return model, tokenizer, device
