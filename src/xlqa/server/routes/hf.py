"""The Hugging Face inference API's question-answering format, so existing clients work unchanged.

``huggingface_hub.InferenceClient(model=URL).question_answering(question=..., context=...)`` posts
``{"inputs": {"question", "context"}, "parameters": {...}}`` to ``URL`` exactly as given, so these routes take
it (and a list of inputs, as the pipeline does):

- ``POST /hf/models/{name}``: a loaded model by name (or its folder's base name);
- ``POST /hf``: the default (first loaded) model;
- ``POST /``: the default model too, for a client given the server's bare address (``GET /`` is the
  dashboard; the methods differ, so they do not clash).

The answer is ``{answer, score, start, end}`` (``score`` is the answer's probability, as in the pipeline), a
list of them when ``top_k`` > 1. The windowing parameters (``doc_stride``, ``max_seq_len``...) are accepted
and the server's own used, so answers equal ``/v1/answer``'s and evaluation's.
"""

from __future__ import annotations

from fastapi import APIRouter

from xlqa.data import Example
from xlqa.server.deps import State
from xlqa.server.engine import get_model
from xlqa.server.routes.answer import ERRORS, answers_of, check_sizes, decode_options
from xlqa.server.schemas import HFAnswer, HFRequest

router = APIRouter(tags=["hugging face compatible"])

HF_MAX_ANSWER_LEN = 15  # the transformers pipeline's default


async def _answer(state, name: str | None, req: HFRequest):
    inputs = req.inputs if isinstance(req.inputs, list) else [req.inputs]
    check_sizes(state.cfg, [i.question for i in inputs], [i.context for i in inputs])
    model = get_model(state, name)
    p = req.parameters
    top_k = p.top_k or 1
    options = decode_options(top_k, p.max_answer_len or HF_MAX_ANSWER_LEN, bool(p.handle_impossible_answer))
    examples = [
        Example(id=str(i), question=x.question, context=x.context, answers=[]) for i, x in enumerate(inputs)
    ]
    chunk = max(1, state.cfg.batch_size)
    parts = await model.batcher.answer_many(examples, options, chunk)
    out = []
    for i in range(len(examples)):
        answers = answers_of(parts[i // chunk], str(i), top_k) or [
            {"text": "", "probability": 0.0, "start": 0, "end": 0}
        ]
        hf = [
            {"answer": a["text"], "score": a["probability"], "start": a["start"], "end": a["end"]}
            for a in answers
        ]
        out.append(hf if top_k > 1 else hf[0])
    return out if isinstance(req.inputs, list) else out[0]


Response = HFAnswer | list[HFAnswer] | list[HFAnswer | list[HFAnswer]]


@router.post(
    "/hf/models/{name:path}", response_model=Response, responses=ERRORS, summary="HF format, by model"
)
async def hf_model(name: str, req: HFRequest, state: State):
    """Hugging Face question-answering request for the loaded model ``name``."""
    return await _answer(state, name, req)


@router.post("/hf", response_model=Response, responses=ERRORS, summary="HF format, default model")
async def hf_default(req: HFRequest, state: State):
    """Hugging Face question-answering request for the default (first loaded) model."""
    return await _answer(state, None, req)


@router.post("/", response_model=Response, responses=ERRORS, summary="HF format at the bare address")
async def hf_root(req: HFRequest, state: State):
    """As ``POST /hf``, for clients given the server's address alone (``GET /`` is the dashboard)."""
    return await _answer(state, None, req)
