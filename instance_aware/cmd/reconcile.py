"""Repair what a crash or a bypass left between the store and Glance.

* A row still ``pending`` after ``pending_age`` seconds means the stack
  stopped between writing it and hearing Glance: if Glance has the image,
  the row becomes active; otherwise it is removed.
* An ``active`` row whose image Glance no longer has (deleted while
  the stack was bypassed or its database down) is marked deleted and kept
  as history.
* An ``active`` row that names another project than the image's owner in
  Glance (an administrator gave the image away while the stack was
  bypassed, or the stack could not move the row) is moved to the owner:
  filters and the query API answer each project from the rows it owns.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from collections.abc import Callable
from typing import TextIO

from instance_aware.capture import listing
from instance_aware.cmd.glance import GlanceClient
from instance_aware.store import models
from instance_aware.store.records import Records


@dataclasses.dataclass
class Summary:
    checked: int = 0
    activated: int = 0
    discarded: int = 0
    marked_deleted: int = 0
    moved: int = 0

    def lines(self, dry_run: bool) -> list[str]:
        verb = 'would be' if dry_run else 'were'
        return [
            f'{self.checked} records checked against the registry',
            f'{self.activated} pending records {verb} activated',
            f'{self.discarded} pending records {verb} discarded',
            f'{self.marked_deleted} records of deleted images {verb} '
            'marked deleted',
            f'{self.moved} records of images given to another project '
            f'{verb} moved',
        ]


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.done = 0
        self.enabled = stream.isatty()

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        width = 40
        filled = int(width * min(self.done, self.total) / self.total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                          f'{self.done}/{self.total}')
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write('\n')


def reconcile(records: Records, glance: GlanceClient, *,
              dry_run: bool = False, batch_size: int = 100,
              pending_age: int = 600,
              progress: Callable[[int], Progress] = Progress) -> Summary:
    """Compare the store with Glance and repair the differences."""
    summary = Summary()
    cutoff = models.utcnow() - datetime.timedelta(seconds=pending_age)
    pending = records.pending(cutoff)
    bar = progress(len(pending) + records.count(models.ACTIVE))
    # Active rows first: a pending row settled below is not checked twice.
    for batch in records.active_batches(batch_size):
        present = glance.present(list(batch))
        summary.checked += len(batch)
        for image_id, project_id in batch.items():
            image = present.get(image_id)
            if image is None:
                summary.marked_deleted += 1
                if not dry_run:
                    records.mark_deleted(image_id)
                continue
            owner = image.get('owner')
            if isinstance(owner, str) and owner and owner != project_id:
                summary.moved += 1
                if not dry_run:
                    records.move(image_id, owner)
        bar.advance(len(batch))
    for image_id in pending:
        image = glance.show(image_id)
        summary.checked += 1
        if image is None:
            summary.discarded += 1
        else:
            summary.activated += 1
        if not dry_run:
            records.settle_pending(
                image_id, image is not None,
                image.get('owner') if image else None,
                listing.parse_time(image.get('created_at'))
                if image else None)
        bar.advance(1)
    bar.close()
    return summary
