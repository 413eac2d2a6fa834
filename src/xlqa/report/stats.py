"""Statistics over evaluation outputs: per-question scores, bootstrap CIs, paired tests, transfer gap,
cross-lingual consistency, breakdowns and SQuAD v2 threshold curves.

Everything but the loaders (:func:`read_results`, :func:`load_examples`, :func:`per_question_scores`) is a
pure numpy function. Randomness always comes from ``np.random.default_rng(seed)``, so the same inputs and
seed give the same numbers. Scores go in as fractions (EM 0/1, F1 0..1) and come out in points (x 100),
like the official metrics.
"""

from __future__ import annotations

import json
import logging
import string
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from xlqa import metrics
from xlqa.data import Example, gold_texts, load_squad
from xlqa.metrics.bootstrap import CHUNK, as_1d, bootstrap_means

log = logging.getLogger(__name__)

PIVOT = "en"


def language_order(languages: Sequence[str]) -> list[str]:
    """Languages in the fixed report order: English first, then the rest alphabetically."""
    return sorted(set(languages), key=lambda lang: (lang != PIVOT, lang))


# -- loading ------------------------------------------------------------------------------------------------
def read_results(eval_dir: str | Path) -> dict:
    """The ``results.json`` of an evaluation folder written by :func:`xlqa.evaluate.evaluate_model`.

    Raises:
        FileNotFoundError: no ``results.json`` in the folder.
        ValueError: not valid JSON or no ``datasets`` list (names the file).
    """
    path = Path(eval_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json (expected an evaluation folder from xlqa evaluate)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(results, dict) or not isinstance(results.get("datasets"), list):
        raise ValueError(f"{path}: missing field 'datasets' (a list of per-file results)")
    for i, entry in enumerate(results["datasets"]):
        for key in ("name", "path", "rules"):
            if key not in entry:
                raise ValueError(f"{path}: datasets[{i}]: missing field {key!r}")
    return results


def resolve_data_path(entry: Mapping, eval_dir: str | Path, data_dirs: Sequence[str | Path] = ()) -> Path:
    """The data file of a results entry.

    Evaluations store the path as given on the command line, often relative, so the candidates are: the
    path as written (relative to the working directory), relative to the evaluation folder and its parents,
    then its file name inside each of ``data_dirs`` or their direct subfolders. :func:`load_examples` checks
    the sha256, so a same-named but different file is never used.

    Raises:
        FileNotFoundError: none of the candidates exists (lists them).
    """
    raw = Path(entry["path"])
    base = Path(eval_dir).resolve()
    candidates = [raw] if raw.is_absolute() else [raw, *(p / raw for p in [base, *base.parents][:4])]
    for folder in map(Path, data_dirs):
        candidates += [folder / raw.name, *sorted(folder.glob(f"*/{raw.name}"))]
    for cand in candidates:
        if cand.is_file():
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"{base}/results.json: data file of {entry['name']!r} not found (tried {tried}); pass its folder as a data dir"
    )


def load_examples(
    entry: Mapping, eval_dir: str | Path, data_dirs: Sequence[str | Path] = ()
) -> list[Example]:
    """The examples a results entry was scored on (the first ``n_questions`` of its file, as evaluated).

    Args:
        entry: one item of ``results.json`` ``datasets``.
        eval_dir: the evaluation folder.
        data_dirs: extra folders to look for the data file in (see :func:`resolve_data_path`).

    Raises:
        ValueError: the file's sha256 differs from the one recorded at evaluation time.
    """
    path = resolve_data_path(entry, eval_dir, data_dirs)
    data = load_squad(path, language=entry.get("language"), max_examples=entry.get("n_questions"))
    want = entry.get("sha256")
    if want and data.report.sha256 != want:
        raise ValueError(
            f"{path}: sha256 {data.report.sha256[:12]}... differs from {want[:12]}... recorded for "
            f"{entry['name']!r} in {Path(eval_dir) / 'results.json'}: the data changed since evaluation"
        )
    return data.examples


def read_json_file(path: Path) -> dict:
    """A JSON object from ``path``; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (expected from xlqa evaluate)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err


def _entry_of(eval_dir: Path, dataset: str | None) -> Mapping:
    entries = read_results(eval_dir)["datasets"]
    names = [e["name"] for e in entries]
    if dataset is None and len(entries) == 1:
        return entries[0]
    if dataset is None or dataset not in names:
        raise ValueError(
            f"{eval_dir}: choose a dataset with dataset=...; this folder has: {', '.join(names)}"
        )
    return entries[names.index(dataset)]


def per_question_scores(
    source: str | Path | Mapping,
    dataset: str | None = None,
    *,
    eval_dir: str | Path | None = None,
    examples: list[Example] | None = None,
    data_dirs: Sequence[str | Path] = (),
) -> dict[str, tuple[float, float]]:
    """Question id -> (em 0/1, f1 0..1) of one evaluated dataset under the rules it was scored with.

    The mean x 100 equals the official ``exact_match``/``exact`` and ``f1`` in ``results.json`` (for
    ``squad2``, the predictions already carry the no-answer threshold applied at evaluation).

    Args:
        source: an evaluation folder, or one entry of its ``results.json`` ``datasets`` list.
        dataset: the dataset name when ``source`` is a folder holding more than one.
        eval_dir: the evaluation folder, required when ``source`` is an entry (for its predictions).
        examples: the scored examples if already loaded (else read from the entry's data file).
        data_dirs: extra folders to look for the data file in (see :func:`resolve_data_path`).
    """
    if isinstance(source, Mapping):
        if eval_dir is None:
            raise ValueError(f"per_question_scores: entry {source.get('name')!r} needs eval_dir=")
        entry, folder = source, Path(eval_dir)
    else:
        folder = Path(source)
        entry = _entry_of(folder, dataset)
    if examples is None:
        examples = load_examples(entry, folder, data_dirs)
    predictions = read_json_file(folder / entry["name"] / "predictions.json")
    rules = entry["rules"]
    lang = entry.get("language") if rules in ("mlqa", "xlqa-ext") else None
    return metrics.per_question(gold_texts(examples), predictions, rules, lang)


# -- confidence intervals and tests ---------------------------------------------------------------------------
def paired_test(a, b, method: str = "bootstrap", n: int = 10000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Two-sided paired test of mean(b) - mean(a) over the same questions (aligned by position).

    - ``bootstrap``: resample the per-question differences ``d = b - a`` with replacement;
      p = min(1, 2 * (1 + min(#{mean* <= 0}, #{mean* >= 0})) / (n + 1)) over the resampled means (the
      percentile interval inverted; the +1 keeps p above 0, like a permutation p-value).
    - ``permutation``: paired sign-flip test; under H0 (no difference) each ``d_i`` is as likely to be
      ``-d_i``; p = (1 + #{|flipped mean| >= |observed mean|}) / (n + 1), so identical inputs give p = 1.

    The confidence interval is the paired percentile bootstrap in both cases.

    Args:
        a: per-question scores of the reference system (0..1).
        b: per-question scores of the compared system, same questions in the same order.
        method: ``bootstrap`` or ``permutation``.
        n: resamples (or sign flips).
        seed: RNG seed.
        alpha: 1 - confidence level of the interval.

    Returns:
        ``diff`` (mean(b) - mean(a)), ``ci_low``, ``ci_high`` in points, ``p_value``.
    """
    a, b = as_1d(a, "a"), as_1d(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired_test needs equal lengths, got {a.size} and {b.size}")
    if method not in ("bootstrap", "permutation"):
        raise ValueError(f"unknown method {method!r}; valid: bootstrap, permutation")
    d = b - a
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    boot = bootstrap_means(d, n, rng)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    tol = 1e-12
    if method == "bootstrap":
        p = min(1.0, 2 * (1 + min(np.sum(boot <= tol), np.sum(boot >= -tol))) / (n + 1))
    else:
        hits = 0
        for lo in range(0, n, CHUNK):
            signs = rng.integers(0, 2, size=(min(CHUNK, n - lo), d.size)) * 2 - 1
            hits += int(np.sum(np.abs((signs * d).mean(axis=1)) >= abs(observed) - tol))
        p = (1 + hits) / (n + 1)
    return {
        "diff": 100 * observed,
        "p_value": float(p),
        "ci_low": 100 * float(low),
        "ci_high": 100 * float(high),
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), for several languages tested at once."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    out = np.empty_like(p)
    out[order] = np.minimum(adj, 1.0)
    return out.tolist()


def transfer_gap(scores_by_lang: Mapping[str, float], pivot: str = PIVOT) -> dict[str, float]:
    """Score of the pivot language minus the score of every other language (positive: worse than pivot).

    Args:
        scores_by_lang: language -> score (e.g. F1).
        pivot: the training language.
    """
    if pivot not in scores_by_lang:
        raise ValueError(
            f"transfer_gap: pivot {pivot!r} missing; languages: {', '.join(sorted(scores_by_lang))}"
        )
    ref = float(scores_by_lang[pivot])
    return {
        lang: ref - float(scores_by_lang[lang]) for lang in language_order(scores_by_lang) if lang != pivot
    }


# -- cross-lingual consistency --------------------------------------------------------------------------------
def consistency(per_lang: Mapping[str, Mapping[str, float]]) -> dict:
    """How consistently questions are answered across languages of a parallel set (XQuAD: same ids).

    Args:
        per_lang: language -> (question id -> EM 0/1). Only ids present in every language are used.

    Returns:
        ``languages`` (report order), ``n_questions`` (shared ids), ``counts`` (list of length L + 1:
        how many shared questions are answered exactly in k languages, k = 0..L), ``agreement`` (L x L:
        share of shared questions where both languages are right or both wrong) and ``kappa`` (L x L
        Cohen's kappa of the same pairs; NaN where the chance agreement is 1, e.g. one language all wrong).
    """
    langs = language_order(per_lang)
    if len(langs) < 2:
        raise ValueError(f"consistency needs at least two languages, got {langs}")
    shared = set.intersection(*(set(per_lang[lang]) for lang in langs))
    if not shared:
        raise ValueError(f"consistency: no question id is shared by all of {', '.join(langs)}")
    qids = sorted(shared)
    m = np.array([[per_lang[lang][q] for q in qids] for lang in langs], dtype=np.float64)
    m = (m > 0.5).astype(np.float64)
    n = m.shape[1]
    agree = (m @ m.T + (1 - m) @ (1 - m).T) / n
    p = m.mean(axis=1)
    chance = np.outer(p, p) + np.outer(1 - p, 1 - p)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(chance < 1 - 1e-12, (agree - chance) / (1 - chance), np.nan)
    counts = np.bincount(m.sum(axis=0).astype(np.int64), minlength=len(langs) + 1)
    return {
        "languages": langs,
        "n_questions": n,
        "counts": counts.tolist(),
        "agreement": agree,
        "kappa": kappa,
    }


# -- breakdowns -----------------------------------------------------------------------------------------------
WH_WORDS = ("what", "which", "who", "when", "where", "why", "how")
ANSWER_EDGES = (5, 10, 20, 40)  # characters of the first gold answer
CONTEXT_EDGES = (500, 750, 1000, 1500)  # characters of the context


def _strip_punct(token: str) -> str:
    return "".join(
        c for c in token if c not in string.punctuation and not unicodedata.category(c).startswith("P")
    )


def question_word(question: str, language: str | None) -> str:
    """A question's type bucket.

    English: the first wh-word anywhere in the question (``whom``/``whose`` count as ``who``; ``how many``
    and ``how much`` are their own buckets), else ``other``. Other languages: the first whitespace token,
    lower-cased without punctuation; text written without spaces (Chinese, Japanese, Thai) gives its first
    two characters. Use the parallel English question (``reference`` in :func:`breakdowns`) for types that
    compare across languages.
    """
    tokens = [_strip_punct(t) for t in question.lower().split()]
    tokens = [t for t in tokens if t]
    if language == "en":
        for i, tok in enumerate(tokens):
            tok = "who" if tok in ("whom", "whose") else tok
            if tok in WH_WORDS:
                nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
                return f"how {nxt}" if tok == "how" and nxt in ("many", "much") else tok
        return "other"
    if not tokens:
        return "other"
    return tokens[0][:2] if _unspaced(tokens[0][0]) else tokens[0]


def _unspaced(char: str) -> bool:
    """A character of a script written without spaces between words (Thai, CJK, kana)."""
    code = ord(char)
    return 0x0E00 <= code <= 0x0E7F or 0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x9FFF


def _bucket_labels(edges: Sequence[int]) -> list[str]:
    lows = [1, *(e + 1 for e in edges)]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, edges)] + [f">{edges[-1]}"]


def _summarize(keys: list[str], em: np.ndarray, f1: np.ndarray, order: list[str]) -> dict[str, dict]:
    codes = np.array([order.index(k) for k in keys], dtype=np.int64)
    n = np.bincount(codes, minlength=len(order))
    em_sum = np.bincount(codes, weights=em, minlength=len(order))
    f1_sum = np.bincount(codes, weights=f1, minlength=len(order))
    return {
        label: {"n": int(n[i]), "em": float(100 * em_sum[i] / n[i]), "f1": float(100 * f1_sum[i] / n[i])}
        for i, label in enumerate(order)
        if n[i] > 0
    }


def breakdowns(
    examples: Sequence[Example],
    scores: Mapping[str, tuple[float, float]],
    *,
    language: str | None = None,
    reference: Sequence[Example] | None = None,
    top_k: int = 8,
    answer_edges: Sequence[int] = ANSWER_EDGES,
    context_edges: Sequence[int] = CONTEXT_EDGES,
) -> dict[str, dict[str, dict]]:
    """EM and F1 by question type, gold answer length and context length.

    Args:
        examples: the scored examples; only ids present in ``scores`` count.
        scores: question id -> (em, f1) as from :func:`per_question_scores`.
        language: the questions' language, for :func:`question_word`.
        reference: parallel examples (e.g. the English XQuAD file) whose question type and lengths are used
            for the same ids, so buckets mean the same in every language; ids it lacks use their own.
        top_k: question-type buckets kept (most frequent first); the rest are merged into ``other``.
        answer_edges: upper bounds (characters, inclusive) of the answer-length buckets; unanswerable
            questions form ``no answer``.
        context_edges: upper bounds (characters, inclusive) of the context-length buckets.

    Returns:
        ``{"question": ..., "answer_length": ..., "context_length": ...}``, each bucket ->
        ``{"n", "em", "f1"}`` (EM and F1 in points), buckets in a fixed order.
    """
    ref = {ex.id: ex for ex in reference} if reference is not None else {}
    rows = [(ref.get(ex.id, ex), ex.id in ref) for ex in examples if ex.id in scores]
    if not rows:
        raise ValueError("breakdowns: none of the examples has a score")
    em = np.array([scores[ex.id][0] for ex, _ in rows])
    f1 = np.array([scores[ex.id][1] for ex, _ in rows])
    qtype = [question_word(ex.question, PIVOT if from_ref else language) for ex, from_ref in rows]
    kinds, freq = np.unique(qtype, return_counts=True)
    ranked = [str(kinds[i]) for i in np.lexsort((kinds, -freq))]
    keep = [k for k in ranked if k != "other"][:top_k]
    qtype = [q if q in keep else "other" for q in qtype]
    ans_labels, ctx_labels = _bucket_labels(answer_edges), _bucket_labels(context_edges)
    ans_len = [len(ex.answers[0].text) if ex.answers and not ex.is_impossible else -1 for ex, _ in rows]
    ans = [ans_labels[int(np.searchsorted(answer_edges, n))] if n >= 0 else "no answer" for n in ans_len]
    ctx = [ctx_labels[int(np.searchsorted(context_edges, len(ex.context)))] for ex, _ in rows]
    return {
        "question": _summarize(qtype, em, f1, [*keep, "other"]),
        "answer_length": _summarize(ans, em, f1, [*ans_labels, "no answer"]),
        "context_length": _summarize(ctx, em, f1, ctx_labels),
    }


# -- SQuAD v2 -------------------------------------------------------------------------------------------------
def squad2_curves(
    null_odds: Mapping[str, float],
    gold: Mapping[str, Sequence[str]],
    f1_per_question: Mapping[str, float],
    em_per_question: Mapping[str, float] | None = None,
) -> dict:
    """Scores and precision/recall as the no-answer threshold moves (SQuAD v2 style data).

    A question is answered with its best span when ``null_odds <= threshold`` and abstains otherwise;
    abstaining scores 1 on an unanswerable question and 0 on an answerable one. Precision and recall follow
    the official script's PR curves: over the answered questions, precision = (sum of span scores of answered
    answerable questions) / (answered questions), recall = the same sum / (answerable questions).

    Args:
        null_odds: question id -> null score minus best span score (``null_odds.json``).
        gold: question id -> gold texts (``[]`` for unanswerable).
        f1_per_question: question id -> F1 (0..1) of the best non-null span; only these ids are used.
        em_per_question: the same for EM (optional).

    Returns:
        ``thresholds`` (one per distinct odds value, ascending; the first is ``-inf``: answer nothing),
        ``f1`` and ``em`` (points at each threshold), ``precision``, ``recall`` (arrays, threshold order),
        ``average_precision`` (sum of precision x recall increments), ``best_f1``, ``best_threshold``.
    """
    qids = [q for q in f1_per_question if q in null_odds and q in gold]
    if not qids:
        raise ValueError("squad2_curves: no question has a score, a null odds value and gold answers")
    odds = np.array([null_odds[q] for q in qids], dtype=np.float64)
    order = np.argsort(odds, kind="stable")
    odds = odds[order]
    has = np.array([bool(gold[q]) for q in qids])[order]
    # k = number answered (the k smallest odds); keep k = 0 and every k that ends a run of equal odds
    ends = np.concatenate([[0], np.flatnonzero(np.append(odds[1:] != odds[:-1], True)) + 1])
    thresholds = np.concatenate([[-np.inf], odds[ends[1:] - 1]])
    n, n_has = len(qids), int(has.sum())
    out: dict = {"thresholds": thresholds}
    for key, per_q in (("f1", f1_per_question), ("em", em_per_question)):
        if per_q is None:
            continue
        s = np.array([per_q.get(q, 0.0) for q in qids], dtype=np.float64)[order]
        answered = np.concatenate([[0.0], np.cumsum(s)])[ends]
        abstain_right = (n - n_has) - np.concatenate([[0], np.cumsum(~has)])[ends]
        out[key] = 100 * (answered + abstain_right) / n
        if key == "f1":
            true_pos = np.concatenate([[0.0], np.cumsum(s * has)])[ends]
            precision = np.divide(true_pos, ends, out=np.ones_like(true_pos), where=ends > 0)
            recall = true_pos / n_has if n_has else np.zeros_like(true_pos)
            out["precision"], out["recall"] = precision, recall
            out["average_precision"] = float(np.sum(np.diff(recall) * precision[1:]))
    best = int(np.argmax(out["f1"]))
    out["best_f1"], out["best_threshold"] = float(out["f1"][best]), float(thresholds[best])
    return out
