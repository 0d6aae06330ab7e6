"""Views of the next batch made while the current step runs.

The host-to-device copy of batch i+1 and its augmentation are queued on a side CUDA stream
before step i is launched, so they overlap with the step's compute instead of queueing
behind it on the default stream. On the CPU it is a plain loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ..augment import Augmenter


class ViewPrefetcher:
    """Iterate `loader` batches as (query views, key views, batch) on `device`."""

    def __init__(self, loader: Iterable[dict], augmenter: Augmenter, device: torch.device):
        self.loader, self.augmenter, self.device = loader, augmenter, torch.device(device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        pending = None
        for batch in self.loader:
            ready = self._queue(batch, stream)
            if pending is not None:
                yield self._collect(pending)
            pending = ready
        if pending is not None:
            yield self._collect(pending)

    def _queue(self, batch: dict, stream: torch.cuda.Stream | None):
        if stream is None:
            images = batch["image"].to(self.device)
            return (*self.augmenter.two_views(images, batch), batch, None)
        with torch.cuda.stream(stream):
            images = batch["image"].to(self.device, non_blocking=True)
            q, k = self.augmenter.two_views(images, batch)
            done = torch.cuda.Event()
            done.record(stream)
        return q, k, batch, done

    def _collect(self, pending):
        q, k, batch, done = pending
        if done is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_event(done)
            # made on the side stream, used on the main one: keep the allocator from
            # handing their memory out again before the main stream is done with them
            q.record_stream(main)
            k.record_stream(main)
        return q, k, batch
