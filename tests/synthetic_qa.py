"""A synthetic SQuAD-format task that a tiny random T5 learns on two CPU cores in about a minute.

Why this task shows that the generative path learns, and not that a model memorised its data:

* Every context holds two facts about two people with two different relations ("Anna lives in Kalomi.
  Bruno works in Zoreto."), and the question asks for one of them: the model must read the question to
  pick the fact, so always answering the first or the last place gets about half of the questions.
* The places of the held-out questions are names that never occur in training, so they cannot be recalled:
  they have to be copied, piece by piece, from the context. Names are three syllables; the tokenizer splits
  them into syllable pieces (``Ka ##lo ##mi``), which training sees in other combinations.
* Every training context is new (people, relations and places drawn at random), so there is nothing to
  memorise about which person lives where.

The model is a 2+2-layer T5 (d_model 64, 8 heads, 0.2M parameters) with a WordPiece tokenizer of 72 tokens
built here with the ``tokenizers`` library, so nothing is downloaded.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

SYLLABLES = ("ka", "lo", "mi", "re", "su", "to", "vi", "na", "pe", "zo", "ba", "du", "fi", "go", "hu", "ja")
PEOPLE = ("Anna", "Bruno", "Carla", "David", "Emma", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Klara",
          "Lukas", "Marta", "Nils", "Olga", "Paul", "Rosa", "Sven", "Tina", "Umar", "Vera", "Walter", "Xenia",
          "Yusuf", "Zoe")  # fmt: skip
# (words in the context, before the place; the question)
RELATIONS = (
    ("lives in", "Where does {} live?"),
    ("works in", "Where does {} work?"),
    ("was born in", "Where was {} born?"),
    ("studied in", "Where did {} study?"),
)
WORDS = ("question", "context", ":", "?", ".", "Where", "does", "did", "was", "in", "live", "lives", "work",
         "works", "born", "study", "studied")  # fmt: skip
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def place_names(held_out: int = 300, seed: int = 0) -> tuple[list[str], list[str]]:
    """All 3,360 three-syllable names (no syllable twice), shuffled: (training names, ``held_out`` others)."""
    names = ["".join(p).capitalize() for p in itertools.permutations(SYLLABLES, 3)]
    random.Random(seed).shuffle(names)
    return names[:-held_out], names[-held_out:]


def make_questions(n: int, places: list[str], seed: int, id_prefix: str) -> list[dict]:
    """``n`` questions in the format of ``conftest.write_squad``, each on a new two-fact context."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        facts = zip(rng.sample(PEOPLE, 2), rng.sample(range(len(RELATIONS)), 2), rng.sample(places, 2))
        context, answers = "", []
        for person, rel, place in facts:
            lead = f"{person} {RELATIONS[rel][0]} "
            answers.append((RELATIONS[rel][1].format(person), place, len(context) + len(lead)))
            context += f"{lead}{place}. "
        question, place, start = answers[rng.randrange(2)]
        out.append({"id": f"{id_prefix}{i}", "question": question, "context": context.strip(),
                    "answers": [(place, start)]})  # fmt: skip
    return out


def syllable_tokenizer():
    """A fast WordPiece tokenizer: the template words and names whole, places as syllable pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = [
        PAD,
        EOS,
        UNK,
        *WORDS,
        *PEOPLE,
        *(s.capitalize() for s in SYLLABLES),
        *(f"##{s}" for s in SYLLABLES),
    ]
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def save_tiny_t5(out: Path, seed: int = 0) -> Path:
    """A randomly initialised 2+2-layer T5 (decoder start = pad, as in T5) and its tokenizer, saved to ``out``."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok = syllable_tokenizer()
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=8, d_ff=128, num_layers=2, num_decoder_layers=2,
                   num_heads=8, dropout_rate=0.0, decoder_start_token_id=tok.pad_token_id,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    T5ForConditionalGeneration(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
