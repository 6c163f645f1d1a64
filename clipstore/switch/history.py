"""The switch history: what each model switch recorded so that a rollback can undo it.

Each switch pushes an entry on a stack kept in the setting `model_history` (its tag, the tables and models
before and after, the versions of the files table and of the previous tables at the switch) and tags those
versions (a Lance tag `clipstore-switch-<n>`, n = the switch's place on the stack, so a version cleanup keeps
them). A rollback pops the entry and moves it to `model_rollbacks`, so a rollback with nothing left to undo can
say what was undone. The stack and the active tables change together, in one settings write.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from clipstore.db import layout, tables
from clipstore.db.identities import locate, relinked
from clipstore.encoders.identity import ModelIdentity, portable_path

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext

SWITCH_TAG = "clipstore-switch-{n}"


def history(db) -> list[dict]:
    """The switches a rollback can undo, oldest first (each with its tag, the tables and models before and
    after, and the table versions a rollback restores)."""
    value = tables.read_setting(db, layout.HISTORY_SETTING)
    return json.loads(value) if value else []


def rolled_back(db) -> list[dict]:
    """The switches undone by rollbacks, oldest first."""
    value = tables.read_setting(db, layout.ROLLBACKS_SETTING)
    return json.loads(value) if value else []


def record_switch(store: "StoreContext", old: dict, new: dict, current: ModelIdentity, target: ModelIdentity, files_version: int) -> str:
    """Point the store at the `new` tables in one commit (the switch), after tagging what a rollback of it
    needs and pushing its entry on the history; returns the tag."""
    db = store.db
    entries = history(db)
    tag = SWITCH_TAG.format(n=len(entries) + 1)  # n-th live switch: a rolled-back switch's tag is reused
    existing = tables.table_names(db)
    versions = {kind: db.open_table(name).version for kind, name in old.items() if name in existing}
    for name, version in [*((old[kind], version) for kind, version in versions.items()), (layout.FILES, files_version)]:
        tag_version(db.open_table(name), tag, version)
    entries.append(
        {
            "tag": tag,
            "previous": old,
            "previous_versions": versions,
            "previous_model": current.portable(store.path).to_json(),
            "files_version": files_version,
            "switched_to": new,
            "model": target.portable(store.path).to_json(),
            "switched_at": tables.utc_now().isoformat(),
        }
    )
    settings: dict = {layout.ACTIVE_SETTING: new, layout.HISTORY_SETTING: entries}
    if target.checkpoint_path and not target.pretrained:
        # A reused table may record the checkpoint elsewhere (it moved since): remember where it is now.
        settings[layout.LOCATIONS_SETTING] = {**relinked(db), target.checkpoint_sha256: portable_path(target.checkpoint_path, store.path)}
    write_settings(db, settings)  # the switch
    return tag


def tagged_versions(db, entry: dict) -> dict[str, int]:
    """The previous tables' versions of a history entry written before they were recorded: its Lance tags."""
    versions = {}
    for kind, name in entry["previous"].items():
        try:
            tagged = db.open_table(name).tags.list().get(entry["tag"])
        except Exception:  # noqa: BLE001 - no such table, or a Lance without tags: nothing to restore
            tagged = None
        if tagged:
            versions[kind] = int(tagged["version"])
    return versions


def recorded_spec(store: "StoreContext", recorded: str) -> str:
    """The spec of a model recorded in the history (`ModelIdentity.to_json`), located in this store."""
    return locate(store.db, store.path, ModelIdentity.from_json(recorded)).spec


def write_settings(db, values: dict) -> None:
    """Write settings as JSON values, in one commit."""
    tables.write_settings(db, {key: json.dumps(value) for key, value in values.items()})


def tag_version(table, name: str, version: int | None) -> None:
    """Put a Lance tag on a table version, or remove it (version None). Best effort: older Lance versions
    without tags still switch and roll back (tags only keep those versions from a cleanup)."""
    try:
        if name in table.tags.list():
            table.tags.delete(name)
        if version is not None:
            table.tags.create(name, version)
    except (AttributeError, NotImplementedError, ValueError, OSError, RuntimeError):
        pass

