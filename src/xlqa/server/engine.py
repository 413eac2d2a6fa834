"""(to be written: loaded models and the answer function)"""

from __future__ import annotations


def load_into(state, name: str) -> None:
    raise NotImplementedError


async def shutdown(state) -> None:
    return None
