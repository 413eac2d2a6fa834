"""An XLM-R style (sentencepiece Unigram) fast tokenizer built from pieces, scores and a normalization map.

`build_charsmap` lays a normalization map out as a sentencepiece ``precompiled_charsmap`` (a darts-clone
double array over UTF-8 bytes, then the replacement strings), the form ``tokenizers``' ``Precompiled``
normalizer reads. `build_xlmr_tokenizer` writes an XLM-R style fast tokenizer (``tokenizer.json`` and
``tokenizer_config.json``) around it; :mod:`xlqa.sources.offline` uses it for the E5S1 conversion.
"""

from __future__ import annotations

import json
import struct
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any

_METASPACE = "\u2581"


def _composition_rules(rules: dict[str, str]) -> dict[str, str]:
    """Two-character canonical sequences that sentencepiece's nmt_nfkc map composes (``e`` + U+0301 -> ``é``).

    The E5S1 map keys single code points only. tokenizers' Precompiled normalizer looks a whole grapheme up
    only when it is shorter than 6 UTF-8 bytes and uses the shortest matching key, so only such short pairs
    whose first character has no rule of its own matter. The second character may be any character the
    map turns into the combining mark (U+0341 -> U+0301).
    """
    to_single: dict[str, list[str]] = defaultdict(list)
    for src, rep in rules.items():
        if len(rep) == 1:
            to_single[rep].append(src)
    out: dict[str, str] = {}
    for cp in range(0xC0, 0x110000):
        ch = chr(cp)
        dec = unicodedata.decomposition(ch)
        if not dec or dec.startswith("<") or " " not in dec:
            continue
        nfd = unicodedata.normalize("NFD", ch)
        if len(nfd) != 2 or nfd[0] in rules:
            continue
        target = rules.get(ch, ch)
        for second in (nfd[1], *to_single.get(nfd[1], ())):
            key = nfd[0] + second
            if len(key.encode()) < 6 and target != nfd[0] + rules.get(second, second):
                out.setdefault(key, target)
    return out


def _double_array(children: list[dict[int, int]], values: list[int | None]) -> list[int]:
    """Lay a byte trie out as a darts-clone double array (the layout sentencepiece charsmaps use)."""
    size = 1 << 12
    units, used = [0] * size, bytearray(size)
    used[0] = 1
    bases: set[int] = set()
    queue, first_free, top = [(0, 0)], 1, 0
    for node, pos in queue:
        labels = ([0] if values[node] is not None else []) + sorted(children[node])
        first_free = p = used.find(0, first_free) % (size + 1)  # -1 (full) -> size
        while True:
            base = p ^ labels[0]
            if base >= size - 256:
                units, used, size = units + [0] * size, used + bytearray(size), 2 * size
            if base != pos and base not in bases and not any(used[base ^ lab] for lab in labels):
                break
            p = used.find(0, p + 1) % (size + 1)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalization map too large for the charsmap layout")
        bases.add(base)
        top = max(top, base | 0xFF)
        units[pos] |= offset << 10
        if values[node] is not None:
            units[pos] |= 1 << 8
            units[base] = values[node] | (1 << 31)
            used[base] = 1
        for lab in sorted(children[node]):
            units[base ^ lab], used[base ^ lab] = lab, 1
            queue.append((children[node][lab], base ^ lab))
    return units[: top + 1]


def build_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """A sentencepiece ``precompiled_charsmap`` (for ``tokenizers.normalizers.Precompiled``) from a
    code point map, plus the two-character compositions of `_composition_rules`."""
    rules = {chr(cp): "".join(map(chr, rep)) for cp, rep in norm_map.items()}
    rules.update(_composition_rules(rules))
    strings, where = bytearray(), {}
    for rep in sorted(set(rules.values())):
        where[rep] = len(strings)
        strings += rep.encode() + b"\0"
    children: list[dict[int, int]] = [{}]
    values: list[int | None] = [None]
    for key, rep in rules.items():
        node = 0
        for byte in key.encode():
            if byte not in children[node]:
                children[node][byte] = len(children)
                children.append({})
                values.append(None)
            node = children[node][byte]
        values[node] = where[rep]
    units = _double_array(children, values)
    return struct.pack(f"<I{len(units)}I", 4 * len(units), *units) + bytes(strings)


def build_xlmr_tokenizer(
    vocab: dict[str, Any], norm_map: dict[int, tuple[int, ...]], out: Path, max_len: int
):
    """Write tokenizer.json and tokenizer_config.json of an XLM-R style Unigram tokenizer into ``out``."""
    import tokenizers as tk
    from tokenizers import decoders, normalizers, pre_tokenizers

    pieces = vocab["pieces"]
    if "<mask>" not in pieces[-3:]:
        raise ValueError("E5S1 vocabulary has no <mask> piece at its end")
    names = {k: pieces[vocab[f"{k}_id"]] for k in ("bos", "eos", "pad", "unk")}
    names["mask"] = "<mask>"
    tok = tk.Tokenizer(
        tk.models.Unigram([(p, float(s)) for p, s in zip(pieces, vocab["scores"])], vocab["unk_id"])
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(build_charsmap(norm_map)), normalizers.Replace(tk.Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    bos, eos = names["bos"], names["eos"]
    tok.post_processor = tk.processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab["bos_id"]), (eos, vocab["eos_id"])],
    )
    specials = [names[k] for k in ("bos", "pad", "eos", "unk", "mask")]
    tok.add_special_tokens(
        [tk.AddedToken(t, special=True, normalized=False, lstrip=t == "<mask>") for t in specials]
    )
    tok.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": max_len}
    config.update({f"{k}_token": names[k] for k in ("bos", "eos", "unk", "pad", "mask")})
    config.update(sep_token=eos, cls_token=bos)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
