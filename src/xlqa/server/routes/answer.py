"""``POST /v1/answer`` and ``POST /v1/answer/batch``: answers with character offsets into the context.

Both go through the model's dynamic batcher (:mod:`xlqa.server.batching`); a client batch is queued a model
batch at a time, so it is never refused for its size alone (up to ``--max-batch-items``).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from xlqa.config import ServeConfig
from xlqa.data import Example
from xlqa.postprocess import Decoded
from xlqa.server.batching import DecodeOptions
from xlqa.server.deps import State
from xlqa.server.engine import get_model
from xlqa.server.errors import LimitExceeded
from xlqa.server.schemas import (
    AnswerOptions,
    AnswerRequest,
    AnswerResponse,
    BatchRequest,
    BatchResponse,
)

router = APIRouter(tags=["answers"])

ERRORS = {
    404: {"description": "no loaded model has that name"},
    413: {"description": "a question, context or batch beyond the server's limits"},
    422: {"description": "malformed JSON, a wrong type or an empty field"},
    429: {"description": "the answer queue is full; retry after Retry-After seconds"},
    503: {"description": "no model is loaded yet"},
}


def check_sizes(cfg: ServeConfig, questions: Sequence[str], contexts: Sequence[str], where: str = "") -> None:
    """413 naming the option when a question or a context is longer than the server allows."""
    for i, (q, c) in enumerate(zip(questions, contexts)):
        at = f"{where}[{i}]" if where else ""
        if len(c) > cfg.max_context_chars:
            raise LimitExceeded(
                f"context{at} has {len(c)} characters; the limit is {cfg.max_context_chars} "
                "(--max-context-chars)"
            )
        if len(q) > cfg.max_question_chars:
            raise LimitExceeded(
                f"question{at} has {len(q)} characters; the limit is {cfg.max_question_chars} "
                "(--max-question-chars)"
            )


def decode_options(top_k: int, max_answer_length: int, handle_impossible: bool) -> DecodeOptions:
    return DecodeOptions(
        top_k=top_k, max_answer_length=max_answer_length, handle_impossible_answer=handle_impossible
    )


def answers_of(decoded: Decoded, qid: str, top_k: int) -> list[dict]:
    """The ``top_k`` best answers of one question, best first; the empty answer has ``start == end == 0``."""
    out = []
    for cand in decoded.nbest.get(qid, [])[:top_k]:
        start, end = (cand.start, cand.end) if cand.start is not None and cand.start >= 0 else (0, 0)
        out.append(
            {
                "text": cand.text,
                "score": float(cand.score),
                "probability": float(cand.probability or 0.0),
                "start": start,
                "end": end,
            }
        )
    return out


def _options(req: AnswerOptions) -> DecodeOptions:
    return decode_options(req.top_k, req.max_answer_length, req.handle_impossible_answer)


@router.post("/v1/answer", response_model=AnswerResponse, responses=ERRORS, summary="Answer one question")
async def answer(req: AnswerRequest, state: State) -> dict:
    """The best ``top_k`` answers to ``question`` in ``context``; long contexts are read in windows as in
    evaluation, and ``start``/``end`` are character offsets into ``context`` as sent (``text ==
    context[start:end]``)."""
    check_sizes(state.cfg, [req.question], [req.context])
    model = get_model(state, req.model)
    example = Example(id="0", question=req.question, context=req.context, answers=[])
    decoded = await model.batcher.answer([example], _options(req))
    return {"model": model.name, "answers": answers_of(decoded, "0", req.top_k)}


@router.post(
    "/v1/answer/batch", response_model=BatchResponse, responses=ERRORS, summary="Answer many questions"
)
async def answer_batch(req: BatchRequest, state: State) -> dict:
    """Answers for every item, in item order; up to ``--max-batch-items`` items, queued a model batch
    (``--batch-size`` questions) at a time."""
    cfg = state.cfg
    if len(req.items) > cfg.max_batch_items:
        raise LimitExceeded(
            f"the batch has {len(req.items)} items; the limit is {cfg.max_batch_items} (--max-batch-items)"
        )
    check_sizes(cfg, [it.question for it in req.items], [it.context for it in req.items], where="items")
    model = get_model(state, req.model)
    ids = [it.id if it.id is not None else str(i) for i, it in enumerate(req.items)]
    examples = [
        Example(id=str(i), question=it.question, context=it.context, answers=[])
        for i, it in enumerate(req.items)
    ]
    chunk = max(1, cfg.batch_size)
    parts = await model.batcher.answer_many(examples, _options(req), chunk)
    results = []
    for i, item_id in enumerate(ids):
        results.append({"id": item_id, "answers": answers_of(parts[i // chunk], str(i), req.top_k)})
    return {"model": model.name, "results": results}
