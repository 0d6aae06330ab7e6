"""``ssl-hpc ingest``: a catalogue plus a directory of cutouts -> a sharded survey.

`catalogue` reads and validates the table (ids, column spellings), `layout` finds each
object's image files, `job` cuts the rows into shards and writes them as a resumable
sharded job (`data.sharded_job`): each shard read, checked and written atomically by one
worker, so an interrupted run leaves only complete shards behind.
"""

from .catalogue import Reject
from .config import IngestConfig
from .job import IngestReport, ingest

__all__ = ["IngestConfig", "IngestReport", "Reject", "ingest"]
