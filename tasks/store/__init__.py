"""The task database: one module owns the schema and connections (db.py), one the
group commit of submits (commit.py), one turns rows into records (rows.py), and
``TaskStore`` (taskstore.py) is every read and write over them; sequences' reads and
writes are seqstore.py's. Beside them: one
server per database file (instance_lock.py) and the pruning of old tasks
(housekeeping.py)."""

from tasks.store.commit import Inserted, NewTask
from tasks.store.db import on_read_only_fs
from tasks.store.rows import Statement
from tasks.store.seqstore import NewSequence, SequenceRow, SequenceStore, StepRow
from tasks.store.taskstore import TaskStore

__all__ = ["Inserted", "NewSequence", "NewTask", "SequenceRow", "SequenceStore", "Statement",
           "StepRow", "TaskStore", "on_read_only_fs"]
