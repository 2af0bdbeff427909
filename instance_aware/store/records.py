"""The captured properties of one registry's images, as the filters see them.

:class:`Records` is the one object a filter holds (``Filter.records``):
it joins the store's parts, each in a module of its own job, and adds
nothing of its own.  Code that needs one part only may use that part's
class directly.
"""

from __future__ import annotations

from instance_aware.store.answers import (
    Related,
    RelationFields,
    Snapshot,
    Stored,
)
from instance_aware.store.reads import VALUES_BATCH
from instance_aware.store.relations import Relations
from instance_aware.store.search import PREFETCH, Search
from instance_aware.store.sweeps import Sweeps
from instance_aware.store.writes import Writes

__all__ = ['PREFETCH', 'VALUES_BATCH', 'Records', 'Related',
           'RelationFields', 'Snapshot', 'Stored']


class Records(Writes, Search, Relations, Sweeps):
    """Writes and their protocol (:mod:`~.writes`), reads of given images
    (:mod:`~.reads`), filtered lists (:mod:`~.search`), the query API
    (:mod:`~.relations`) and reconcile's passes (:mod:`~.sweeps`) of one
    registry."""
