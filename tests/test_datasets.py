"""Registry of named benchmarks: names, groups, errors, and the checksums against the reference mirror."""

from __future__ import annotations

import pytest

from xlqa.sources import registry as datasets
from xlqa.sources.download import fetch
from xlqa.sources.registry import (
    GROUPS,
    MLQA_LANGS,
    RULES,
    TYDIQA_LANGS,
    XQUAD_LANGS,
    BenchmarkSpec,
    expand,
    format_table,
    get_spec,
    list_benchmarks,
)
from xlqa.sources.verify import sha256_file


def test_every_name_and_group_expands():
    for spec in list_benchmarks():
        assert expand(spec.name) == [spec]
        assert get_spec(spec.name) is spec
    for group in [*GROUPS, "all"]:
        assert expand(group), group


def test_group_sizes_and_members():
    assert [s.name for s in expand("xquad")] == [f"xquad.{x}" for x in XQUAD_LANGS]
    assert len(XQUAD_LANGS) == 12
    assert expand("mlqa") == expand("mlqa.dev")
    assert [s.name for s in expand("mlqa")] == [f"mlqa.dev.{x}.{x}" for x in MLQA_LANGS]
    assert all(s.split == "test" and s.language == s.question_language for s in expand("mlqa.test"))
    assert len(expand("mlqa.test")) == 7
    for split in ("dev", "test"):
        pairs = expand(f"mlqa.{split}.pairs")
        assert len(pairs) == 49
        assert {(s.language, s.question_language) for s in pairs} == {
            (c, q) for c in MLQA_LANGS for q in MLQA_LANGS
        }
    assert len(expand("tydiqa")) == len(TYDIQA_LANGS) == 9
    assert len(expand("all")) == len(list_benchmarks()) == 4 + 12 + 2 * 49 + 9


def test_expand_comma_lists_and_lists_deduplicate_in_order():
    names = [s.name for s in expand("xquad.de, squad1.dev,xquad.de")]
    assert names == ["xquad.de", "squad1.dev"]
    names = [s.name for s in expand(["squad2.dev", "mlqa.dev.de.de,mlqa"])]
    assert names[:2] == ["squad2.dev", "mlqa.dev.de.de"]
    assert len(names) == 1 + 7  # de.de is not repeated by the group


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(ValueError) as err:
        expand("xquad,xqaud.de")
    msg = str(err.value)
    assert "'xqaud.de'" in msg
    assert "Did you mean 'xquad.de'" in msg
    for name in ("xquad", "mlqa.test", "tydiqa", "all", "squad1.train", "tydiqa.sw"):
        assert name in msg
    assert "mlqa.<dev|test>.<context>.<question>" in msg
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        get_spec("nope")
    with pytest.raises(ValueError, match="no benchmark name given"):
        expand(" , ")


def test_every_spec_is_complete():
    for s in list_benchmarks():
        assert s.url.startswith("https://"), s.name
        assert s.language and len(s.language) == 2, s.name
        assert s.rules in RULES
        assert s.split in ("train", "dev", "test")
        assert s.sha256 and len(s.sha256) == 64, s.name  # every official download has a known checksum
        assert s.size and s.size > 0
        assert s.mirror_path.endswith(".json")
    assert len({s.mirror_path for s in list_benchmarks()}) == len(list_benchmarks())


def test_rules_and_archive_members():
    assert get_spec("squad2.dev").rules == "squad2"
    assert get_spec("xquad.th").rules == "squad1" and get_spec("tydiqa.ko").rules == "squad1"
    mlqa = get_spec("mlqa.test.hi.zh")
    assert (mlqa.rules, mlqa.language, mlqa.question_language) == ("mlqa", "hi", "zh")
    assert mlqa.member == "MLQA_V1/test/test-context-hi-question-zh.json"
    assert mlqa.mirror_path == "mlqa/test-context-hi-question-zh.json"
    assert mlqa.url.endswith("/MLQA_V1.zip") and mlqa.size == 75719050
    tydi = get_spec("tydiqa.te")
    assert tydi.member == "tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-telugu.json"
    assert tydi.mirror_path == "tydiqa/tydiqa-goldp-dev-telugu.json"
    # archive members: only the reference-mirror checksum (if any) is accepted for a mirror file
    assert tydi.mirror_checksums == ()
    assert get_spec("tydiqa.ar").mirror_checksums == (get_spec("tydiqa.ar").mirror_sha256,)
    # single files: the official checksum is accepted from a mirror too
    train = get_spec("squad1.train")
    assert train.mirror_checksums == (train.mirror_sha256, train.sha256)
    assert get_spec("xquad.de").mirror_checksums == (get_spec("xquad.de").sha256,)


def test_spec_validation():
    base = dict(
        name="t", language="en", split="dev", url="https://x/y.json", sha256=None, mirror_path="t/y.json"
    )
    with pytest.raises(ValueError, match="rules 'squad3'"):
        BenchmarkSpec(rules="squad3", **base)
    with pytest.raises(ValueError, match="sha256 must be 64"):
        BenchmarkSpec(rules="squad1", **{**base, "sha256": "ABC"})
    with pytest.raises(ValueError, match="must be relative"):
        BenchmarkSpec(rules="squad1", **{**base, "mirror_path": "../etc/y.json"})
    with pytest.raises(ValueError, match="is not http"):
        BenchmarkSpec(rules="squad1", **{**base, "url": "ftp://x/y.json"})


def test_register_and_unregister():
    spec = BenchmarkSpec(
        name="test.tmp", language="en", rules="squad1", split="dev", url="https://x/y.json",
        sha256=None, mirror_path="t/y.json",
    )  # fmt: skip
    datasets.register(spec)
    try:
        assert expand("test.tmp") == [spec]
        with pytest.raises(ValueError, match="already registered"):
            datasets.register(spec)
        with pytest.raises(ValueError, match="group name"):
            datasets.register(BenchmarkSpec(**{**spec.__dict__, "name": "xquad"}))
    finally:
        datasets.unregister("test.tmp")
    with pytest.raises(ValueError):
        get_spec("test.tmp")


def test_format_table():
    table = format_table(expand("squad1.dev,mlqa.dev.de.en"), cached={"squad1.dev"})
    lines = table.splitlines()
    header = ["name", "lang", "q-lang", "rules", "split", "download", "sha256", "mirror", "path", "cached"]
    assert lines[0].split() == header
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("squad1.dev") and lines[2].endswith("yes")
    assert "95aa6a52d5d6" in lines[2] and "4.6 MB rajpurkar.github.io" in lines[2]
    assert "mlqa.dev.de.en  de    en" in lines[3] and "(archive)" in lines[3]
    assert not lines[3].endswith("yes")


def test_reference_mirror_files_verify(shared_data):
    """Every spec whose mirror file exists in ../shared/data passes the mirror checksum policy."""
    found = [s for s in list_benchmarks() if (shared_data / s.mirror_path).is_file()]
    names = {s.name for s in found}
    assert {f"xquad.{x}" for x in XQUAD_LANGS} <= names
    assert {
        "squad1.train",
        "squad1.dev",
        "squad2.dev",
        "mlqa.dev.de.de",
        "mlqa.dev.ar.ar",
        "tydiqa.ar",
    } <= names
    for spec in found:
        assert fetch(spec, mirror=shared_data) == shared_data / spec.mirror_path
        assert spec.mirror_checksums, f"{spec.name}: file in the reference mirror but no checksum for it"


def test_official_checksums_match_identical_shared_files(shared_data):
    """The README says the XQuAD files and squad/dev-v1.1.json are the official bytes: cross-check."""
    for spec in [*expand("xquad"), get_spec("squad1.dev")]:
        path = shared_data / spec.mirror_path
        assert path.stat().st_size == spec.size, spec.name
        assert sha256_file(path) == spec.sha256, spec.name
