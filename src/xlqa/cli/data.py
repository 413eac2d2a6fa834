"""``xlqa data``: validate, list, download and measure the answer ceiling of SQuAD-format data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from xlqa.cli.common import XlqaGroup, out_console
from xlqa.postprocess import MAX_ANSWER_LENGTH

data_app = typer.Typer(
    cls=XlqaGroup,
    help="Inspect, validate and download SQuAD-format data.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@data_app.command("check")
def data_check(
    files: Annotated[list[Path], typer.Argument(help="SQuAD-format files or folders")],
) -> None:
    """Validate files: counts, repaired answer offsets, unusable answers, errors naming file, question and field.

    Example: xlqa data check ../shared/data/cmrc2018/cmrc2018_dev.json
    """
    from xlqa.data import check_files, format_report
    from xlqa.errors import DataError

    bad = 0
    for rep in check_files(files):
        if isinstance(rep, DataError):
            bad += 1
            out_console.print(f"[bold red]ERROR[/] {rep}")
        else:
            out_console.print(format_report(rep), highlight=False)
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
    doc_stride: Annotated[int, typer.Option(help="window overlap")] = 128,
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
    for col in ("data", "lang", "rules", "questions", "EM", "F1", "not in window", "too long", "inexact"):
        table.add_column(col, justify="left" if col in ("data", "rules") else "right")
    for c in rows:
        table.add_row(
            c.name, c.language or "?", c.rules, str(c.questions), f"{c.exact_match:.2f}", f"{c.f1:.2f}",
            str(c.not_in_window), str(c.too_long), str(c.inexact),
        )  # fmt: skip
    out_console.print(table)
    for c in rows:
        for qid, gold, got in c.examples:
            out_console.print(f"{c.name} {qid}: gold {gold!r} -> decoded {got!r}", highlight=False)
