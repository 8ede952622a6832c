"""(being built)"""

from typing import Any


def run(platform: Any) -> None:
    return None
