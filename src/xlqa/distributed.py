"""Evaluation across processes (``accelerate launch``, ``torchrun``): shard the windows, gather the logits; the
training loop's Accelerator (:func:`make_accelerator`) and its collective flag (:func:`any_process`).

Each process runs the forward pass on whole batches of the length-sorted evaluation order, dealt round-robin
by Accelerate's ``BatchSamplerShard``, so every window meets the same batch-mates (and the same padding width)
as in a single process, and the logits come out the same. Every process must run the same number of
collectives, so when the batches do not divide evenly the last processes get copies of the first batches;
after gathering, those copies are dropped by window index (a window's logits are kept once, the first time
they arrive), never by slicing the tail of the last batch, which is wrong for batches of different sizes.
Logits are padded across processes (batch size and width differ between processes) before they are gathered,
and every process receives all windows, so post-processing sees all windows of a question wherever they were
computed. Generated answers (seq2seq) are gathered the same way, as (window, text, score) triples.

The helpers take an ``accelerate.Accelerator`` or an ``accelerate.PartialState`` (``state``) and read only
``num_processes``, ``process_index``, ``is_main_process`` and ``device``; a state of one process (or None)
means no sharding and no collectives.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from xlqa.errors import ConfigError


def process_state():
    """Accelerate's state of this process: under ``accelerate launch`` or ``torchrun`` it joins the process
    group from the launcher's environment (NCCL on GPUs, gloo on CPUs); otherwise a state of one process.

    Without an accelerator device Accelerate only builds a CPU process group when asked for the CPU (else it
    quietly runs every launched process as a single one), so it is asked whenever there is no device.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.accelerator.is_available())


def is_distributed(state: Any) -> bool:
    """True when ``state`` has more than one process (the work must be sharded and gathered)."""
    return state is not None and state.num_processes > 1


def is_main(state: Any) -> bool:
    """True on the process that writes files and registers runs (every process when there is no state)."""
    return state is None or bool(state.is_main_process)


def shard_batches(batches: list[list[int]], state: Any) -> list[list[int]]:
    """This process's share of ``batches``: batches ``rank, rank + n, ...``, all processes the same count.

    Accelerate's ``BatchSamplerShard`` (``even_batches``) tops the last round up with copies of the first
    batches, whole, so no batch is split and its windows keep their batch-mates.
    """
    if not is_distributed(state) or not batches:
        return batches
    from accelerate.data_loader import BatchSamplerShard

    shard = BatchSamplerShard(
        batches, num_processes=state.num_processes, process_index=state.process_index, even_batches=True
    )
    return [list(b) for b in shard]


def gather_windows(
    state: Any, rows: torch.Tensor, index: torch.Tensor, *, pad_first: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Every process's ``rows`` (``[batch, channels, width]``) and window ``index`` (``[batch]``), joined.

    Widths and batch sizes are padded across processes first: rows with -inf (on the left for a left-padding
    tokenizer, so a window's tokens stay the last of its row), indices with -1 (rows to skip).
    """
    if not is_distributed(state):
        return rows.float().cpu().numpy(), index.cpu().numpy()
    from accelerate.utils import gather, pad_across_processes

    rows = pad_across_processes(
        rows.float().contiguous(), dim=2, pad_index=float("-inf"), pad_first=pad_first
    )
    rows = pad_across_processes(rows, dim=0, pad_index=float("-inf"))
    index = pad_across_processes(index.contiguous(), dim=0, pad_index=-1)
    return gather(rows).cpu().numpy(), gather(index).cpu().numpy()


def gather_generated(state: Any, mine: list[tuple[int, str, float]]) -> list[tuple[int, str, float]]:
    """Every process's ``(window, text, score)`` triples, in rank order (texts differ in length: pickled)."""
    if not is_distributed(state):
        return mine
    from accelerate.utils import gather_object

    return gather_object(mine)


@contextlib.contextmanager
def main_first(state: Any) -> Iterator[None]:
    """The block runs on the main process first, then on the others (a cache filled once, then read)."""
    if not is_distributed(state):
        yield
        return
    with state.main_process_first():
        yield


def broadcast(state: Any, obj: Any) -> Any:
    """The main process's ``obj`` on every process (picklable objects)."""
    if not is_distributed(state):
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


def wait_for_everyone(state: Any) -> None:
    """A barrier: no process goes on before all have come here."""
    if is_distributed(state):
        state.wait_for_everyone()


def any_process(accelerator, flag: bool) -> bool:
    """True when ``flag`` is True in any process (a collective: every process must call it)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def make_accelerator(**kwargs):
    """An Accelerator; a second run in the same process (tests, notebooks) may change the mixed precision.

    Accelerate keeps one process-wide state and refuses a different ``mixed_precision`` once it is set. Under
    ``accelerate launch`` a process trains once, so resetting the state between runs on one process is safe;
    in a distributed job the state is left alone.

    Without a GPU, Accelerate turns a process started by ``torchrun`` or ``accelerate launch --multi_gpu`` into
    a lone single-process run (each process trains alone, silently) unless it is told to use the CPU; so
    several processes without a GPU get ``cpu=True`` (gloo), and a process count other than the launcher's
    ``WORLD_SIZE`` is refused rather than trained on.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and not torch.cuda.is_available():
        kwargs["cpu"] = True
    if AcceleratorState._shared_state and PartialState().num_processes == 1 and world == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(**kwargs)
    if accelerator.num_processes != world:
        raise ConfigError(
            f"launched as {world} processes (WORLD_SIZE) but Accelerate runs {accelerator.num_processes}"
            f" ({accelerator.distributed_type}); check the launcher's configuration"
        )
    return accelerator
