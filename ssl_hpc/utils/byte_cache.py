"""A least-recently-used cache bounded by the bytes it holds, not by its entry count."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class ByteLRU:
    """`get(key, make)` returns the cached bytes of `key` or stores `make()`'s; the oldest
    entries go once the total passes `max_bytes` (a value larger than the whole budget is
    returned but never kept). Safe to share between threads; `make` runs outside the lock,
    so two threads may both render a missing key (the later result wins)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes {max_bytes}: must be >= 0")
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """The bytes of `key`, made and cached on a miss."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = make()
        if len(value) > self.max_bytes:
            return value
        with self._lock:
            old = self._entries.pop(key, None)
            self.bytes -= len(old) if old is not None else 0
            self._entries[key] = value
            self.bytes += len(value)
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= len(dropped)
        return value
