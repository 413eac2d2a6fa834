"""The official benchmarks as data: URLs, sizes, checksums and mirror paths of SQuAD, XQuAD, MLQA, TyDi QA.

Checksums are facts copied from public sources, not computed from downloads here:
- SQuAD v1.1/v2.0 and XQuAD (11 languages): tensorflow_datasets `url_checksums/xquad.txt` and
  `question_answering/squad/checksums.tsv` (URL, size, sha256).
- XQuAD Romanian: huggingface/datasets `datasets/xquad/dataset_infos.json` (download_checksums; it also lists
  the other 11 files with the same values as tensorflow_datasets).
- MLQA: tensorflow_datasets `url_checksums/mlqa.txt` (the official MLQA_V1.zip, members
  `MLQA_V1/{dev,test}/{split}-context-{c}-question-{q}.json` as read by huggingface/datasets `mlqa.py`).
- TyDi QA GoldP dev: tensorflow_datasets `url_checksums/tydi_qa.txt` (the official tydiqa-goldp-v1.1-dev.tgz,
  members `tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{language}.json` as unpacked by XTREME's download_data.sh).
The XQuAD files and squad/dev-v1.1.json of the reference mirror (../shared/data) hash to these same values.

Two checksums per spec (see `BenchmarkSpec`): `sha256` of the official download (the file, or the archive that
holds it) and `mirror_sha256` of the file at `mirror_path` in the xlqa reference mirror where that file is not
the official one (rebuilt SQuAD files, MLQA/TyDi files extracted from other copies).
"""

from __future__ import annotations

from xlqa.sources.spec import MLQA_LANGS, TYDIQA_LANGS, XQUAD_LANGS, BenchmarkSpec

_SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
_SQUAD = {  # name: (file, size, sha256 of the official file)
    "squad1.train": (
        "train-v1.1.json",
        30288272,
        "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    ),
    "squad1.dev": (
        "dev-v1.1.json",
        4854279,
        "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    ),
    "squad2.train": (
        "train-v2.0.json",
        42123633,
        "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    ),
    "squad2.dev": (
        "dev-v2.0.json",
        4370528,
        "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
    ),
}
_SQUAD_MIRROR = {  # name: (sha256 of the reference-mirror copy, how it differs from the official file)
    "squad1.train": (
        "fbdc2838e0cc3beee039a8fe6a26d341e6c557526a6f2a0d262873a92d26b764",
        "reference-mirror copy rebuilt from the explorer pages (synthetic ids, first-occurrence offsets)",
    ),
    "squad2.dev": (
        "6c63ec620666dc7229c17d7744506b3de5532340949a9075d66a3ee936b76ea5",
        "reference-mirror copy rebuilt from the explorer pages (no plausible_answers)",
    ),
}

_XQUAD_URL = "https://github.com/deepmind/xquad/raw/master/xquad.{lang}.json"
_XQUAD = {  # lang: (size, sha256)
    "ar": (1582988, "abdabd7afed5c635d99cca0f3f0d0c9d9ed0bc77451e963c2e4e0638c29e486d"),
    "de": (669810, "990b5d746746ed65ed4702ea5f35f99ffa4e2f1c390c07d003642acd937916f9"),
    "el": (1918889, "821cf0f88e73fa258fd2f548b19b6ec39f7025059e16f6f9fc8cd797c9c3663e"),
    "en": (609383, "e4c57d1c9143aaa1c5d265ba5987a65f4e69528d2a98f29d6e75019b10344f29"),
    "es": (684322, "dcbae93ec3a9f4b9e78fd834a171d6f96c1a875e10e15b7530b7e4ef4971e37e"),
    "hi": (1680538, "df2cce3532b37e9beb8979704b5c9a4bf874358f105395a298b89427b43b9d24"),
    "ro": (661158, "94f8d54e93ad2b7dd2e76dd921a666b5b8eff2d4379df9f179c42b445f09643f"),
    "ru": (1896368, "208d5b1aa154c52b1b5c5eda16281e455e8fd198cdb9af3f469f0d6037d973bf"),
    "th": (1809143, "5cdda11d0e1e075f7872abf4e6ae830388ce7f617964d542308e9ae4257e0f43"),
    "tr": (729506, "92179a564774b7696100d144c1e10870d0a966b6fccbdd254a65b9d2ab1971cc"),
    "vi": (911401, "f619a1eb11fb42d3ab0834259e488a65f585447ef6154437bfb7199d85161a04"),
    "zh": (808652, "691d0b3359bc6b8faa8de931dfdfe21d50a65861ae348e32a0d1a0190b0c8835"),
}

_MLQA_URL = "https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip"
_MLQA_SIZE = 75719050
_MLQA_SHA256 = "246e8089933d13007fe80684d5c5c0713d6834cf8b3b4a0ec7c66f0a0d2baac8"
_MLQA_MIRROR = {  # (split, context, question): sha256 of the reference-mirror copy (not the official bytes)
    ("dev", "de", "de"): "3adf0d32c6f7cb3e6aab2f8e151836f1633b06aec1411d633a5ca22f0ad6d739",
    ("dev", "ar", "ar"): "804d8e1a5355486d837432af08c68e33cf4ea16361142775f0ba700bcde91b40",
}

_TYDI_URL = "https://storage.googleapis.com/tydiqa/v1.1/tydiqa-goldp-v1.1-dev.tgz"
_TYDI_SIZE = 1725055
_TYDI_SHA256 = "5a415d019a345794c8a83191ecfe4a761eaab69dab79c3c9813d4379e1cc5519"
_TYDI_MIRROR = {"ar": "ae2ea23122ffda312a6548d4f8624fa4cbf4321751bbaadacf1dc4946ec5600b"}


def official_specs() -> list[BenchmarkSpec]:
    """The official benchmarks: SQuAD, XQuAD, MLQA, TyDi QA GoldP, in that order."""
    return [*_squad_specs(), *_xquad_specs(), *_mlqa_specs(), *_tydi_specs()]


def _squad_specs() -> list[BenchmarkSpec]:
    specs = []
    for name, (file, size, sha) in _SQUAD.items():
        mirror_sha, note = _SQUAD_MIRROR.get(name, (None, ""))
        specs.append(
            BenchmarkSpec(
                name=name,
                language="en",
                rules="squad2" if name.startswith("squad2") else "squad1",
                split=name.split(".")[1],
                url=_SQUAD_URL + file,
                sha256=sha,
                size=size,
                mirror_path=f"squad/{file}",
                mirror_sha256=mirror_sha,
                family="squad",
                license="CC BY-SA 4.0",
                note=note,
            )
        )
    return specs


def _xquad_specs() -> list[BenchmarkSpec]:
    return [
        BenchmarkSpec(
            name=f"xquad.{lang}",
            language=lang,
            rules="squad1",
            split="test",
            url=_XQUAD_URL.format(lang=lang),
            sha256=_XQUAD[lang][1],
            size=_XQUAD[lang][0],
            mirror_path=f"xquad/xquad.{lang}.json",
            family="xquad",
            license="CC BY-SA 4.0",
        )
        for lang in XQUAD_LANGS
    ]


def _mlqa_specs() -> list[BenchmarkSpec]:
    """Every (context, question) language pair of MLQA dev and test, all members of the one official zip."""
    specs = []
    for split in ("dev", "test"):
        for c in MLQA_LANGS:
            for q in MLQA_LANGS:
                file = f"{split}-context-{c}-question-{q}.json"
                mirror_sha = _MLQA_MIRROR.get((split, c, q))
                specs.append(
                    BenchmarkSpec(
                        name=f"mlqa.{split}.{c}.{q}",
                        language=c,
                        question_language=q,
                        rules="mlqa",
                        split=split,
                        url=_MLQA_URL,
                        sha256=_MLQA_SHA256,
                        size=_MLQA_SIZE,
                        member=f"MLQA_V1/{split}/{file}",
                        mirror_path=f"mlqa/{file}",
                        mirror_sha256=mirror_sha,
                        family="mlqa",
                        license="CC BY-SA 3.0",
                        note="reference-mirror copy converted from another copy" if mirror_sha else "",
                    )
                )
    return specs


def _tydi_specs() -> list[BenchmarkSpec]:
    return [
        BenchmarkSpec(
            name=f"tydiqa.{lang}",
            language=lang,
            rules="squad1",
            split="dev",
            url=_TYDI_URL,
            sha256=_TYDI_SHA256,
            size=_TYDI_SIZE,
            member=f"tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{lang_name}.json",
            mirror_path=f"tydiqa/tydiqa-goldp-dev-{lang_name}.json",
            mirror_sha256=_TYDI_MIRROR.get(lang),
            family="tydiqa",
            license="Apache-2.0",
        )
        for lang, lang_name in TYDIQA_LANGS.items()
    ]


def official_groups() -> dict[str, tuple[str, ...]]:
    """Group name -> member benchmark names (in a stable, documented order)."""
    same = {split: tuple(f"mlqa.{split}.{x}.{x}" for x in MLQA_LANGS) for split in ("dev", "test")}
    pairs = {
        split: tuple(f"mlqa.{split}.{c}.{q}" for c in MLQA_LANGS for q in MLQA_LANGS)
        for split in ("dev", "test")
    }
    return {
        "squad1": ("squad1.train", "squad1.dev"),
        "squad2": ("squad2.train", "squad2.dev"),
        "xquad": tuple(f"xquad.{x}" for x in XQUAD_LANGS),
        "mlqa": same["dev"],
        "mlqa.dev": same["dev"],
        "mlqa.test": same["test"],
        "mlqa.dev.pairs": pairs["dev"],
        "mlqa.test.pairs": pairs["test"],
        "tydiqa": tuple(f"tydiqa.{x}" for x in TYDIQA_LANGS),
    }
