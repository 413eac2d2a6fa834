"""Request and response bodies of the answer, model and Hugging Face compatible routes (pydantic).

Types are checked by FastAPI (422 naming the field); sizes that depend on the server's configuration (context
and question length, batch items) are checked by the routes (413 naming the option).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_TOP_K = 20  # answers per question: the n-best list decoded per question holds 20 (as in evaluation)
MAX_ANSWER_TOKENS = 512  # longest answer the decoder may return, in tokens


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only white space")
    return value


Text = Annotated[str, AfterValidator(_not_blank)]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K, description=f"answers to return, 1 to {MAX_TOP_K}")]
AnswerTokens = Annotated[
    int, Field(ge=1, le=MAX_ANSWER_TOKENS, description="longest answer in tokens (windows' tokenizer)")
]


class AnswerOptions(BaseModel):
    """What every answer request may set."""

    model_config = ConfigDict(extra="forbid")

    top_k: TopK = 1
    max_answer_length: AnswerTokens = 30
    handle_impossible_answer: bool = Field(
        False, description="allow the empty answer (start = end = 0) when the model scores no answer highest"
    )
    model: str | None = Field(None, description="a loaded model (GET /v1/models); the first one when omitted")


class AnswerRequest(AnswerOptions):
    """``POST /v1/answer``: one question about one context."""

    question: Text
    context: Text


class Answer(BaseModel):
    """One answer: ``text == context[start:end]`` (character offsets into the context as sent)."""

    text: str
    score: float = Field(description="start + end logit of the span")
    probability: float = Field(description="softmax over the question's 20-best spans")
    start: int
    end: int


class AnswerResponse(BaseModel):
    model: str
    answers: list[Answer]


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="echoed in the result; the item's index when omitted")
    question: Text
    context: Text


class BatchRequest(AnswerOptions):
    """``POST /v1/answer/batch``: many questions; split into model batches by the server."""

    items: list[BatchItem] = Field(min_length=1)


class BatchResult(BaseModel):
    id: str
    answers: list[Answer]


class BatchResponse(BaseModel):
    model: str
    results: list[BatchResult]


# -- Hugging Face inference API (question-answering task) --
class HFInputs(BaseModel):
    question: Text
    context: Text


class HFParameters(BaseModel):
    """The pipeline's parameters; the windowing ones are accepted and the server's own settings used."""

    top_k: TopK | None = None
    max_answer_len: AnswerTokens | None = None
    handle_impossible_answer: bool | None = None
    doc_stride: int | None = None
    max_question_len: int | None = None
    max_seq_len: int | None = None
    align_to_words: bool | None = None


class HFRequest(BaseModel):
    """``{"inputs": {"question", "context"}, "parameters": {...}}`` (``inputs`` may also be a list)."""

    inputs: HFInputs | list[HFInputs]
    parameters: HFParameters = Field(default_factory=HFParameters)


class HFAnswer(BaseModel):
    answer: str
    score: float = Field(description="probability of the answer")
    start: int
    end: int


# -- models --
class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    source: str
    task: str
    languages: list[str] | None = Field(description="languages of the training data, when recorded")
    checkpoint: dict


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    loading: list[str]
    errors: dict[str, str]


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text = Field(description="model folder, hub id or offline source (as --model)")
