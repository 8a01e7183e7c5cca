"""The label vocabulary of an ingest, decided at plan time over all inputs.

WebDataset's ``.cls`` member is an integer class index (``int(value)`` in every reader),
so labels given as words (``animals`` in ``cat.cls``, a manifest ``label`` column of
names) are stored as ids into a vocabulary, ``<dataset>/labels.json``.

Rules (pure functions of the set of labels, so the vocabulary is the same whatever the
executor or worker count):

- every label is a non-negative integer (``"7"``, ``"0012"``): the ids stay as given, no
  translation; ``labels.json`` lists ``names = ["0", "1", ..., str(max id)]`` so that
  ``names[id]`` still holds (``"kind": "integer"``);
- otherwise (names, or names mixed with numbers): every distinct label is a name,
  ``names`` = the sorted unique names and ``id`` = position (``"kind": "names"``); a
  ``"7"`` among words is the name ``"7"``, not the id 7.

``.cls`` sidecars of directory trees are read here (they are tiny) so that the vocabulary
is known before any shard task runs; a sidecar that cannot be read or is not UTF-8
becomes the input's planned ``bad_sidecar`` error.

>>> from mmshard.pipelines.ingest.sources import InputItem
>>> items = [InputItem(key=k, source=k, media=(("jpg", k),), label=lab)
...          for k, lab in (("a", "town"), ("b", "animals"), ("c", None))]
>>> vocab, out = assign_label_ids(items)
>>> vocab.names, [it.label_id for it in out]
(('animals', 'town'), [1, 0, None])
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from ...errors import DataError
from .sources import InputItem

__all__ = ["LABELS_FILE", "LabelVocab", "assign_label_ids", "read_cls_sidecars"]

LABELS_FILE = "labels.json"
MAX_INTEGER_ID = 10_000_000  # beyond this an all-integer label set is treated as names
_INT = re.compile(r"^[0-9]+$")


@dataclasses.dataclass(frozen=True)
class LabelVocab:
    """``names[id]`` is the name of label ``id``; ``kind`` is ``integer`` or ``names``."""

    names: tuple[str, ...]
    kind: str

    def to_json(self) -> bytes:
        doc = {"kind": self.kind, "names": list(self.names), "num_labels": len(self.names)}
        return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    def summary(self) -> dict[str, Any]:
        """What index.json records about the vocabulary."""
        return {"file": LABELS_FILE, "kind": self.kind, "num_labels": len(self.names)}


def _read_small(uri: str) -> bytes:
    from ...storage import open_input

    with open_input(uri) as f:
        return f.read(1 << 16)


def _with_sidecar_label(it: InputItem) -> InputItem:
    cls_uri = next((u for e, u in it.sidecars if e == "cls"), None)
    if cls_uri is None or it.error:
        return it
    rest = tuple((e, u) for e, u in it.sidecars if e != "cls")
    try:
        text = _read_small(cls_uri).decode("utf-8").strip()
    except UnicodeDecodeError:
        return dataclasses.replace(it, sidecars=rest, error=(
            "bad_sidecar", f"label sidecar {cls_uri} is not UTF-8"))
    except (OSError, DataError) as e:  # DataError: not a regular file (swapped since listing)
        return dataclasses.replace(it, sidecars=rest, error=(
            "bad_sidecar", f"cannot read label sidecar {cls_uri}: {e}"))
    if not text:
        return dataclasses.replace(it, sidecars=rest, error=(
            "bad_sidecar", f"label sidecar {cls_uri} is empty"))
    return dataclasses.replace(it, sidecars=rest, label=text)


def read_cls_sidecars(items: Sequence[InputItem], threads: int = 16) -> list[InputItem]:
    """Move each tree input's ``.cls`` sidecar text into ``item.label`` (plan time; the
    small reads run on ``threads`` threads, which matters for object stores)."""
    if not any(e == "cls" for it in items for e, _ in it.sidecars):
        return list(items)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(_with_sidecar_label, items, chunksize=64))


def build_vocab(labels: set[str]) -> LabelVocab | None:
    """The vocabulary for a set of label strings (None when there are no labels)."""
    if not labels:
        return None
    if all(_INT.match(x) for x in labels):
        top = max(int(x) for x in labels)
        if top <= MAX_INTEGER_ID:
            return LabelVocab(tuple(str(i) for i in range(top + 1)), "integer")
    return LabelVocab(tuple(sorted(labels)), "names")


def assign_label_ids(items: Sequence[InputItem]
                     ) -> tuple[LabelVocab | None, list[InputItem]]:
    """Read ``.cls`` sidecars, build the vocabulary, and set ``label``/``label_id``.

    With an integer vocabulary the label name is normalised (``"007"`` -> ``"7"``); an
    empty or blank label (an empty manifest cell) means no label.
    """
    items = [dataclasses.replace(it, label=None)  # an empty manifest cell: no label
             if it.label is not None and not it.label.strip() else it
             for it in read_cls_sidecars(items)]
    vocab = build_vocab({it.label for it in items if it.label is not None and not it.error})
    if vocab is None:
        return None, list(items)
    out = []
    if vocab.kind == "integer":
        for it in items:
            if it.label is None or it.error:
                out.append(it)
                continue
            i = int(it.label)
            out.append(dataclasses.replace(it, label=str(i), label_id=i))
        return vocab, out
    ids = {name: i for i, name in enumerate(vocab.names)}
    for it in items:
        if it.label is None or it.error:
            out.append(it)
        else:
            out.append(dataclasses.replace(it, label_id=ids[it.label]))
    return vocab, out
