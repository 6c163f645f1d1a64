"""Undo the last model switch (`clipstore rollback`): the previous model, its vectors and the file rows as
they were at that switch, restored from the versions the switch history recorded (`switch.history`).
Images ingested after the switch are forgotten by the rollback (a later ingest adds them again)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipstore.db import layout, tables
from clipstore.errors import ReembedError
from clipstore.results import _AsDict
from clipstore.switch.history import history, recorded_spec, rolled_back, tag_version, tagged_versions, write_settings
from clipstore.switch.reembed import carry_new_columns

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext


@dataclass(frozen=True)
class RollbackReport(_AsDict):
    """What a rollback did: the model the store uses again, the model it left, the files table version
    restored and the tag of the undone switch."""

    model: str
    previous_model: str
    files_version: int
    tag: str


def rollback(store: "StoreContext") -> RollbackReport:
    """Return the store to its state before the last switch (the caller holds the write lock).

    The previous tables are restored to their versions at the switch (a later switch may have reused one)
    and get the columns the current tables gained since (a migration while they were not in use), the files
    table is restored, then one commit points the store back at them. If a crash falls in between, running
    rollback again completes it (the history entry is removed only by that commit).
    """
    db = store.db
    entries = history(db)
    if not entries:
        undone = rolled_back(db)
        if undone:
            raise ReembedError(
                f"The last switch of this store (to {recorded_spec(store, undone[-1]['model'])}) was already rolled back: "
                f"the store uses {store.model.spec}, its original model, so there is nothing to roll back."
            )
        raise ReembedError("This store has never been switched to another model: there is nothing to roll back.")
    last = entries[-1]
    names = tables.table_names(db)
    active = tables.active_tables(db)
    if last["previous"]["images"] not in names:
        raise ReembedError(f"The previous images table {last['previous']['images']!r} is gone; cannot roll back.")
    versions = last.get("previous_versions") or tagged_versions(db, last)
    for kind, name in last["previous"].items():
        if name != active[kind] and name in names:  # a table still in use (a shared bank) keeps its rows
            if kind in versions:
                _restore(db, name, int(versions[kind]))
            carry_new_columns(db, active[kind], name)
    _restore(db, layout.FILES, int(last["files_version"]))  # last: the only one of them searches see
    undone = rolled_back(db) + [{**last, "rolled_back_at": tables.utc_now().isoformat()}]
    write_settings(db, {layout.ACTIVE_SETTING: last["previous"], layout.HISTORY_SETTING: entries[:-1], layout.ROLLBACKS_SETTING: undone})
    for name in [layout.FILES, *last["previous"].values()]:
        if name in names:
            tag_version(db.open_table(name), last["tag"], None)  # the tag kept that version for this rollback only
    return RollbackReport(recorded_spec(store, last["previous_model"]), recorded_spec(store, last["model"]), int(last["files_version"]), last["tag"])


def _restore(db, name: str, version: int) -> None:
    """Table `name` back to its rows at `version` (a new version with those rows), unless it is there."""
    table = db.open_table(name)
    if table.version == version:
        return
    try:
        table.restore(version)
    except Exception as exc:  # noqa: BLE001 - Lance raises several kinds for a cleaned-up version
        raise ReembedError(
            f"Cannot restore table {name!r} to version {version} ({exc}); was it removed by a version cleanup? "
            "The store still uses its current model and files."
        ) from exc

