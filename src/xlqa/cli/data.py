"""``xlqa data``: validate, list, download and measure the answer ceiling of SQuAD-format data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from xlqa.cli.common import XlqaGroup, out_console
from xlqa.config import STRIDE_HELP
from xlqa.postprocess import MAX_ANSWER_LENGTH

LANG_CODE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")
"""A language code as --lang takes it: ISO 639 with an optional region or script (pt-BR, zh-Hant)."""

data_app = typer.Typer(
    cls=XlqaGroup,
    help="Inspect, validate and download SQuAD-format data.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@data_app.command("check")
def data_check(
    files: Annotated[
        list[Path], typer.Argument(help="data files (SQuAD JSON, JSONL, MRQA, Parquet) or folders")
    ],
    dedupe_ids: Annotated[
        bool,
        typer.Option(
            "--dedupe-ids", help="rename repeated question ids id#2, id#3 instead of refusing the file"
        ),
    ] = False,
    lang: Annotated[
        str | None,
        typer.Option("--lang", help="context language code for every file (default: from name, else text)"),
    ] = None,
    max_problems: Annotated[int, typer.Option(help="list at most this many problems per file")] = 20,
) -> None:
    """Validate files: format, language, counts, repaired and unusable answers, every problem with counts.

    Exit code 1 when a file cannot be used (or no data file was found), 2 for a bad flag.
    Example: xlqa data check ../shared/data/cmrc2018/cmrc2018_dev.json
    """
    from rich.markup import escape

    from xlqa.data import DataProblems, check_files, format_report
    from xlqa.errors import ConfigError, DataError

    if lang is not None and not LANG_CODE.fullmatch(lang):
        raise ConfigError(f"--lang must be a language code such as de, ja or pt-BR, got {lang!r}")
    bad = 0
    for rep in check_files(files, language=lang, dedupe_ids=dedupe_ids or None):
        if isinstance(rep, DataError):
            bad += 1
            out_console.print(f"[bold red]ERROR[/] {escape(str(rep))}", highlight=False)
            problems = rep.problems if isinstance(rep, DataProblems) else []
            for problem in problems[:max_problems]:
                text = str(problem).removeprefix(f"{problem.path}: ")
                out_console.print(f"  - {text}", highlight=False, markup=False)
            if len(problems) > max_problems:
                out_console.print(f"  ... and {len(problems) - max_problems} more", highlight=False)
        else:
            out_console.print(format_report(rep), highlight=False, markup=False)
        out_console.print()
    if bad:
        raise typer.Exit(code=1)


@data_app.command("list")
def data_list() -> None:
    """List the named benchmarks (name, language, rules, size, whether cached).

    Example: xlqa data list
    """
    from xlqa.sources.download import is_cached
    from xlqa.sources.registry import format_table, list_benchmarks

    specs = list_benchmarks()
    print(format_table(specs, cached={s.name for s in specs if is_cached(s)}))


@data_app.command("get")
def data_get(
    names: Annotated[
        list[str], typer.Argument(help="benchmark names or groups: xquad, mlqa, tydiqa, squad1, all")
    ],
    mirror: Annotated[
        str | None,
        typer.Option(help="local folder or URL laid out like the official files (env XLQA_MIRROR)"),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="cache folder (default $XLQA_CACHE or ~/.cache/xlqa)")
    ] = None,
) -> None:
    """Download benchmarks by name (resumable, checksum-verified) and print where they are.

    Example: xlqa data get xquad squad1.dev --mirror ../shared/data
    """
    from xlqa.sources.download import get

    for p in get(names, cache_dir=cache_dir, mirror=mirror):
        print(p)


@data_app.command("ceiling")
def data_ceiling(
    files: Annotated[list[Path], typer.Argument(help="SQuAD-format files")],
    tokenizer: Annotated[str, typer.Option(help="tokenizer folder, hub id or offline source")],
    max_seq_length: Annotated[int, typer.Option(help="tokens per window")] = 384,
    doc_stride: Annotated[int | None, typer.Option(help=STRIDE_HELP)] = None,
    max_answer_length: Annotated[int, typer.Option(help="longest answer in tokens")] = MAX_ANSWER_LENGTH,
    show: Annotated[int, typer.Option(help="print this many lost answers per file")] = 0,
) -> None:
    """Answer-recoverability ceiling: the EM/F1 a perfect model reaches through windowing and span decoding.

    Example: xlqa data ceiling ../shared/data/xquad/xquad.th.json --tokenizer ../shared/models/xlm-r-tokenizer
    """
    from xlqa.ceiling import answer_ceiling
    from xlqa.data import load_squad
    from xlqa.features import FeatureParams
    from xlqa.modeling import load_tokenizer

    tok = load_tokenizer(tokenizer)
    params = FeatureParams(max_seq_length, doc_stride)
    rows = [
        answer_ceiling(load_squad(f), tok, params, max_answer_length=max_answer_length, show=show)
        for f in files
    ]
    table = Table(title=f"answer ceiling ({tokenizer})")
    losses = ("not in window", "too long", "trimmed", "tokenizer")  # the pipeline's, then the tokenizer's
    cols = ("data", "lang", "rules", "questions", "EM", "F1", *losses)
    for col in cols:
        table.add_column(col, justify="left" if col in ("data", "rules") else "right")
    for c in rows:
        table.add_row(
            c.name, c.language or "?", c.rules, str(c.questions), f"{c.exact_match:.2f}", f"{c.f1:.2f}",
            str(c.not_in_window), str(c.too_long), str(c.trimmed), str(c.tokenizer),
        )  # fmt: skip
    out_console.print(table)
    for c in rows:
        for qid, gold, got in c.examples:
            out_console.print(f"{c.name} {qid}: gold {gold!r} -> decoded {got!r}", highlight=False)
