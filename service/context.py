"""What a request handler needs, built once per app in the lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.settings import Settings
from service.store import Store
from service.submissions import Submitter


@dataclass(frozen=True)
class Context:
    settings: Settings
    store: Store
    clock: Callable[[], float] = field(default=time.time)
    submitter: Submitter | None = None
