"""Top-k recommendations for many users, streamed to CSV, Parquet or JSON lines.

:func:`export_topk` scores users batch by batch through the one top-k path,
:meth:`autorec.models.base.BaseRecommender.recommend`, and hands every batch to a writer as soon as
it is ranked: the users x items score matrix never exists in full, and memory stays at one
batch whatever the number of users.

Formats, from the file name or ``format=``: ``.csv`` (``.csv.gz`` gzipped): a header line
``user,item,rank,score[,title]`` then one row per recommendation; ``.parquet`` (needs
pyarrow): the same columns, one row group per batch; ``.jsonl`` (``.jsonl.gz``): one
object per user, ``{"user": .., "items": [..], "scores": [..]}`` (plus ``"titles"``).

Users and items appear with their raw ids; ``rank`` starts at 1; padded entries (a user
with fewer than ``k`` unseen items) are left out. Scores are float32 and printed in their
shortest round-trip form.

Sharding: with ``num_shards=N, shard=I`` a process handles one contiguous slice of the user
list and writes ``<stem>-part-<I>-of-<N><ext>`` with both numbers zero-padded to 5 digits,
e.g. ``recs.csv`` -> ``recs-part-00002-of-00004.csv``. Slices are cut on batch boundaries,
so every user is scored in exactly the batch of a single-process run (identical floats);
only part 0 of a CSV holds the header line, so ``cat recs-part-*-of-00004.csv`` is byte for
byte the single-process ``recs.csv``. Parquet parts read in order give the same table.
All shards must use the same ``batch_size``/``memory_budget_mb``.

Under ``torchrun`` (or with ``torch.distributed`` initialised) the shards are the ranks:
rank ``RANK`` of ``WORLD_SIZE`` writes part ``RANK`` of ``WORLD_SIZE``, and once every part
is complete rank 0 writes a manifest, ``<name>.manifest.json`` (e.g.
``recs.csv.manifest.json``): the parts in order with their users, rows (recommendations;
users for JSON lines), bytes and SHA-256.
An export whose manifest exists is complete; a rank that fails makes every rank fail and no
manifest is written.

Writes are atomic: each file is written to a hidden ``.<name>.tmp-*`` file in the target's
folder and renamed when complete. One export at a time writes a given file: it holds the
lock ``.<name>.lock`` (released by the kernel if the process dies), and a second export to
the same path fails at once with :class:`~autorec.exceptions.ExportInProgress`. A killed
export leaves only its temp file (and the unlocked lock file), which the next export to the
same path deletes.

Writing runs in a background thread, one batch behind the scoring (pyarrow and gzip release
the GIL), so formatting and compression overlap the next batch's scores.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import distributed
from ._arrays import has_duplicates
from ._io import atomic_path
from ._lock import exclusive
from .exceptions import DistributedError, NotFittedForUser
from .data import RatingMatrix

__all__ = ["export_topk", "shard_path", "shard_bounds", "manifest_path", "FORMATS"]

#: ``format`` field of the manifest a distributed export writes
MANIFEST_FORMAT = "autorec-export-manifest"

#: file-name endings -> (format, gzip)
FORMATS = {
    ".csv": ("csv", False),
    ".csv.gz": ("csv", True),
    ".parquet": ("parquet", False),
    ".pq": ("parquet", False),
    ".jsonl": ("jsonl", False),
    ".jsonl.gz": ("jsonl", True),
    ".ndjson": ("jsonl", False),
}
_BYTES_PER_SCORE = 12  # float32 score block + two same-sized temporaries (mask, model output)


def export_topk(
    model, data: RatingMatrix, path, k: int = 10, *, users=None, user_idx=None,
    exclude_seen: bool = True, batch_size: int | None = None, memory_budget_mb: float = 256,
    format: str | None = None, num_shards: int | None = None, shard: int | None = None,
    item_titles: bool = False, progress: bool = True, exclude: RatingMatrix | None = None,
) -> Path:
    """Write the top-``k`` items of every user (or a subset) to a file, batch by batch.

    Parameters
    ----------
    model : BaseRecommender
        A fitted model.
    data : RatingMatrix
        The users' histories, with the model's items (``data.items`` equal to
        ``model.items_``). Users whose raw id is one of the model's training users are
        scored as those users; the others are new users, folded in from their history row
        (models with ``folds_in = False`` refuse them up front).
    path : str or Path
        Output file; its extension picks the format (see the module docstring). With
        ``num_shards > 1`` the part number is inserted before the extension.
    k : int
        Items per user (at most the number of items).
    users : array-like, optional
        Raw ids of the users to export (in this order), all of them in ``data.users``.
    user_idx : array-like of int, optional
        Positions in ``data.users`` instead of raw ids. Default: every user of ``data``.
    exclude_seen : bool
        Never recommend an item in the user's history row.
    batch_size : int, optional
        Users scored at once. Default: as many as fit ``memory_budget_mb`` with
        12 bytes per (user, item) score (the score block and two temporaries).
    memory_budget_mb : float
        Memory for one batch of scores when ``batch_size`` is not given.
    format : {"csv", "parquet", "jsonl"}, optional
        Overrides the extension.
    num_shards, shard : int, optional
        Export only part ``shard`` of ``num_shards`` contiguous slices of the user list.
        Default: one file in a single process; under ``torchrun``, ``WORLD_SIZE`` parts
        and this rank's part, then a manifest (see the module docstring).
    item_titles : bool
        Add the items' titles from ``data.item_info["title"]``.
    progress : bool
        Show a progress bar on stderr (on a terminal only).
    exclude : RatingMatrix, optional
        More ratings never to recommend, same users and items as ``data``, applied
        whatever ``exclude_seen`` says: e.g. every rating of the users when ``data`` holds
        only those the model reads (the ratings above a threshold).

    Returns
    -------
    pathlib.Path
        The file written (the part's name when sharded).

    Raises
    ------
    ValueError
        Bad arguments, data with other items than the model, unknown user ids, or a model
        returning NaN scores.
    NotFittedForUser
        New users for a model that cannot fold users in.
    ExportInProgress
        Another export is writing the same file.
    DistributedError
        Under torchrun: another rank failed, so the export is incomplete (no manifest).
    """
    model._check_fitted()
    if not isinstance(data, RatingMatrix):
        raise TypeError(f"data must be a RatingMatrix of histories, got {type(data).__name__}")
    if not data.items.equals(model.items_):
        raise ValueError(
            "data's items differ from the model's; express the histories in the model's "
            "vocabulary first: data.align(items=model.items_)"
        )
    if exclude is not None and not (isinstance(exclude, RatingMatrix) and exclude.users.equals(data.users)
                                    and exclude.items.equals(data.items)):
        raise ValueError("exclude must be a RatingMatrix with the users and items of data")
    k = _positive_int(k, "k")
    fmt, gz = _resolve_format(path, format)
    num_shards, shard, here = _shards(model, num_shards, shard)
    rows = _select_rows(data, users, user_idx)  # (n,) positions in data
    if batch_size is None:
        if not memory_budget_mb > 0:
            raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
        batch_size = max(1, int(memory_budget_mb * 2**20) // (_BYTES_PER_SCORE * max(data.n_items, 1)))
    batch_size = _positive_int(batch_size, "batch_size")
    n_users = len(rows)
    lo, hi = shard_bounds(len(rows), batch_size, num_shards, shard)
    rows = rows[lo:hi]
    titles = _title_per_item(data) if item_titles else None
    final = shard_path(path, num_shards, shard)

    def write() -> tuple[int, int]:  # under torchrun its errors reach the other ranks
        model_users = _model_user_idx(model, data, rows)  # (n_shard,) user_idx or -1
        with exclusive(final):
            _remove_stale_temp_files(final)
            with atomic_path(final) as tmp:
                writer = _WRITERS[fmt](tmp, gz, data, titles, header=(shard == 0))
                try:
                    return _stream(model, data, rows, model_users, k, exclude_seen, batch_size,
                                   writer, progress, exclude)
                finally:
                    writer.close()

    if here is None:
        write()
    else:
        _export_by_rank(here, path, final, write, {
            "file": Path(path).name, "format": fmt, "gzip": gz, "k": k, "users": n_users,
            "exclude_seen": bool(exclude_seen), "batch_size": batch_size,
            "columns": _columns(fmt, titles is not None)})
    return final


def manifest_path(path) -> Path:
    """The manifest of a distributed export to ``path``: ``recs.csv`` -> ``recs.csv.manifest.json``."""
    path = Path(path)
    return path.with_name(f"{path.name}.manifest.json")


def shard_path(path, num_shards: int = 1, shard: int = 0) -> Path:
    """The file name of one part: ``recs.csv`` -> ``recs-part-00002-of-00004.csv``.

    The part number goes before the (possibly double, e.g. ``.csv.gz``) extension; with
    ``num_shards == 1`` the path is returned unchanged.
    """
    path = Path(path)
    if num_shards == 1:
        return path
    ext = _known_extension(path.name) or path.suffix
    stem = path.name[: len(path.name) - len(ext)]
    return path.with_name(f"{stem}-part-{shard:05d}-of-{num_shards:05d}{ext}")


def shard_bounds(n_users: int, batch_size: int, num_shards: int, shard: int) -> tuple[int, int]:
    """``[start, stop)`` of the users one shard handles, cut on batch boundaries.

    The ``ceil(n_users / batch_size)`` batches are split into ``num_shards`` contiguous
    runs (sizes differing by at most one batch); shard ``I`` takes batches
    ``floor(I * B / N)`` to ``floor((I + 1) * B / N)``.
    """
    n_batches = math.ceil(n_users / batch_size)
    first = n_batches * shard // num_shards
    last = n_batches * (shard + 1) // num_shards
    return min(first * batch_size, n_users), min(last * batch_size, n_users)


# ------------------------------------------------------------------ the stream
def _stream(model, data, rows, model_users, k, exclude_seen, batch_size, writer, progress, exclude=None):
    """Score, rank and hand every batch to ``writer`` (in a background thread, one batch
    behind); returns (users, recommendations) written."""
    ranks = np.arange(1, min(k, data.n_items) + 1, dtype=np.int32)
    n_recs = 0
    with tqdm(total=len(rows), unit="user", desc="export", disable=None if progress else True,
              file=sys.stderr, leave=False) as bar, ThreadPoolExecutor(1) as pool:
        pending = None
        try:
            for start in range(0, len(rows), batch_size):
                batch_rows = rows[start:start + batch_size]
                history = data.X[batch_rows]  # (b, n_items)
                item_idx, scores = model.recommend(
                    model_users[start:start + batch_size], history, k=k,
                    exclude_seen=exclude_seen, batch_size=len(batch_rows),
                    exclude=None if exclude is None else exclude.X[batch_rows],
                )  # (b, k) each, -1 / -inf padded
                valid = item_idx >= 0
                if not np.isfinite(scores[valid]).all():
                    raise ValueError(f"{type(model).__name__} returned NaN or infinite scores")
                counts = valid.sum(axis=1)  # (b,) items kept per user
                if pending is not None:
                    pending.result()  # the previous batch is written (or its error raised)
                pending = pool.submit(
                    writer.write, batch_rows, counts, item_idx[valid],
                    np.broadcast_to(ranks[: item_idx.shape[1]], item_idx.shape)[valid], scores[valid],
                )
                n_recs += int(counts.sum())
                bar.update(len(batch_rows))
        finally:
            if pending is not None:
                pending.result()
    return len(rows), n_recs


# -------------------------------------------------------- export by rank
def _shards(model, num_shards, shard):
    """(num_shards, shard, world or None): given values (manual shards), or the ranks of a
    distributed job when both are None (its process group is joined here)."""
    if num_shards is None and shard is None:
        here = distributed.world()
        if here.distributed:
            here = distributed.setup(getattr(model, "device_", None))
            return here.size, here.rank, here
    num_shards, shard = _check_shard(1 if num_shards is None else num_shards,
                                     0 if shard is None else shard)
    return num_shards, shard, None


def _export_by_rank(here, path, final: Path, write, facts: dict) -> None:
    """Write this rank's part; when every rank's is complete, rank 0 writes the manifest."""
    error, info = None, [0] * 8
    try:
        users, recs = write()
        size, digest = final.stat().st_size, _sha256(final)
        lines = users if facts["format"] == "jsonl" else recs  # a JSON line per user
        info = [1, users, lines, size, *np.frombuffer(digest, dtype=np.int64).tolist()]
    except Exception as exc:  # tell the other ranks before raising
        error = exc
    with distributed.collective(f"gathering the parts of {path}"):
        parts = distributed.all_gather_int64(info)
    if error is not None:
        raise error
    failed = [rank for rank, part in enumerate(parts) if part[0] != 1]
    if failed:
        raise DistributedError(f"rank(s) {failed} of {here.size} failed to write their part of "
                               f"{path} (their logs say why); no manifest was written")
    ok = 1.0
    if here.main:
        try:
            _write_manifest(path, parts, facts)
        except Exception as exc:
            error, ok = exc, 0.0
    with distributed.collective(f"waiting for the manifest of {path}"):
        ok = distributed.broadcast_floats([ok])[0]
    if error is not None:
        raise error
    if not ok:
        raise DistributedError(f"rank 0 failed to write the manifest of {path} (its log says why)")


def _write_manifest(path, parts: list, facts: dict) -> None:
    n = len(parts)
    manifest = {
        "format": MANIFEST_FORMAT, "version": 1, **facts, "num_shards": n,
        "rows": sum(p[2] for p in parts),
        "parts": [{"file": shard_path(path, n, rank).name, "shard": rank, "users": p[1],
                   "rows": p[2], "bytes": p[3],
                   "sha256": np.asarray(p[4:8], dtype=np.int64).tobytes().hex()}
                  for rank, p in enumerate(parts)],
    }
    target = manifest_path(path)
    with exclusive(target, "a manifest writer"), atomic_path(target) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def _columns(fmt: str, titles: bool) -> list[str]:
    if fmt == "jsonl":
        return ["user", "items", "scores"] + (["titles"] if titles else [])
    return ["user", "item", "rank", "score"] + (["title"] if titles else [])


# ------------------------------------------------------------------- writers
class _Writer:
    """Receives each batch as flat arrays, user-major in rank order."""

    def __init__(self, path: Path, gz: bool, data: RatingMatrix, titles, header: bool):
        self.data, self.titles, self.header = data, titles, header
        self._raw = open(path, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0) if gz else None
        self.fh = io.TextIOWrapper(self._gz or self._raw, encoding="utf-8", newline="")

    def close(self) -> None:
        self.fh.close()  # closes the gzip stream, which leaves the raw file open
        self._raw.close()


class _CsvWriter(_Writer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.columns = ["user", "item", "rank", "score"] + (["title"] if self.titles is not None else [])
        if self.header:
            self.fh.write(",".join(self.columns) + "\n")

    def write(self, rows, counts, item_idx, ranks, scores):
        frame = pd.DataFrame({
            "user": self.data.users[np.repeat(rows, counts)],
            "item": self.data.items[item_idx],
            "rank": ranks,
            "score": scores,
        })
        if self.titles is not None:
            frame["title"] = self.titles[item_idx]
        frame.to_csv(self.fh, header=False, index=False, lineterminator="\n")


class _JsonlWriter(_Writer):
    def write(self, rows, counts, item_idx, ranks, scores):
        user_ids = self.data.users[rows].tolist()
        item_ids = self.data.items[item_idx].tolist()
        score_text = scores.astype(str)  # shortest float32 repr
        titles = self.titles[item_idx].tolist() if self.titles is not None else None
        ends = np.cumsum(counts)
        lines = []
        for user_id, stop, n in zip(user_ids, ends.tolist(), counts.tolist()):
            start = stop - n
            line = (f'{{"user": {json.dumps(user_id)}, "items": {json.dumps(item_ids[start:stop])}, '
                    f'"scores": [{", ".join(score_text[start:stop])}]')
            if titles is not None:
                line += f', "titles": {json.dumps(titles[start:stop], ensure_ascii=False)}'
            lines.append(line + "}\n")
        self.fh.write("".join(lines))


class _ParquetWriter:
    def __init__(self, path: Path, gz: bool, data: RatingMatrix, titles, header: bool):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow is a dev dependency
            raise ImportError("writing Parquet needs pyarrow: pip install 'autorec[parquet]'") from None
        self.pa, self.data, self.titles = pa, data, titles
        self.user_type, self.item_type = (
            pa.int64() if pd.api.types.is_integer_dtype(ids.dtype) else pa.string()
            for ids in (data.users, data.items))
        fields = [("user", self.user_type), ("item", self.item_type), ("rank", pa.int32()),
                  ("score", pa.float32())] + ([("title", pa.string())] if titles is not None else [])
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(str(path), self.schema)

    def _ids(self, index: pd.Index, positions: np.ndarray, type_):
        values = index[positions]
        if type_ == self.pa.string():
            return self.pa.array(values.astype(str).to_numpy(dtype=object), type=type_)
        return self.pa.array(values.to_numpy(dtype=np.int64), type=type_)

    def write(self, rows, counts, item_idx, ranks, scores):
        pa = self.pa
        if len(item_idx) == 0:
            return
        columns = [
            self._ids(self.data.users, np.repeat(rows, counts), self.user_type),
            self._ids(self.data.items, item_idx, self.item_type),
            pa.array(ranks, type=pa.int32()),
            pa.array(scores, type=pa.float32()),
        ]
        if self.titles is not None:
            columns.append(pa.array(self.titles[item_idx], type=pa.string()))
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema),
                                row_group_size=len(item_idx))

    def close(self) -> None:
        self.writer.close()


_WRITERS = {"csv": _CsvWriter, "jsonl": _JsonlWriter, "parquet": _ParquetWriter}


# ------------------------------------------------------------------- helpers
def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_shard(num_shards, shard) -> tuple[int, int]:
    num_shards = _positive_int(num_shards, "num_shards")
    if isinstance(shard, bool) or not isinstance(shard, (int, np.integer)) or not 0 <= shard < num_shards:
        raise ValueError(f"shard must be an integer in [0, {num_shards - 1}], got {shard!r}")
    return num_shards, int(shard)


def _known_extension(name: str) -> str | None:
    lower = name.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):  # ".csv.gz" before ".gz"-less ones
        if lower.endswith(ext) and len(name) > len(ext):
            return name[len(name) - len(ext):]
    return None


def _resolve_format(path, format: str | None) -> tuple[str, bool]:
    name = Path(path).name
    ext = _known_extension(name)
    gz = name.lower().endswith(".gz")
    if format is not None:
        if format not in _WRITERS:
            raise ValueError(f"format must be one of {', '.join(_WRITERS)}, got {format!r}")
        if format == "parquet" and gz:
            raise ValueError("Parquet files are compressed internally; drop the .gz extension")
        return format, gz
    if ext is None:
        raise ValueError(
            f"cannot tell the format of {name!r} from its extension; use one of "
            f"{', '.join(FORMATS)} or pass format="
        )
    return FORMATS[ext.lower()]


def _select_rows(data: RatingMatrix, users, user_idx) -> np.ndarray:
    if users is not None and user_idx is not None:
        raise ValueError("give users (raw ids) or user_idx (positions), not both")
    if users is not None:
        wanted = pd.Index(users)
        rows = data.users.get_indexer(wanted)
        missing = wanted[rows < 0]
        if len(missing):
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise ValueError(f"{len(missing):,} user ids are not in the data: {shown}")
    elif user_idx is not None:
        rows = np.asarray(user_idx).reshape(-1)
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"user_idx must hold integer positions, got dtype {rows.dtype}")
        if rows.size and (rows.min() < 0 or rows.max() >= data.n_users):
            raise ValueError(f"user_idx out of range [0, {data.n_users - 1}]")
    else:
        return np.arange(data.n_users, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if has_duplicates(rows):
        raise ValueError("the users to export contain duplicates")
    return rows


def _model_user_idx(model, data: RatingMatrix, rows: np.ndarray) -> np.ndarray:
    """``user_idx`` in the model's training users for each row of data, -1 for new users."""
    if data.users.equals(model.users_):
        model_users = rows.copy()
    else:
        model_users = model.users_.get_indexer(data.users[rows]).astype(np.int64)
    if not getattr(model, "folds_in", True):
        new = model._is_new(model_users.copy())
        if new.any():
            shown = ", ".join(map(str, data.users[rows[new]][:5]))
            raise NotFittedForUser(
                f"{type(model).__name__} cannot score users it did not see in training "
                f"({int(new.sum()):,} of them, e.g. {shown}); export known users only"
            )
    return model_users


def _title_per_item(data: RatingMatrix) -> np.ndarray:
    info = data.item_info
    if info is None or "title" not in info.columns:
        raise ValueError("item_titles=True needs data.item_info with a 'title' column")
    titles = info["title"].reindex(data.items)
    return titles.astype(object).where(titles.notna(), "").to_numpy(dtype=object)


def _remove_stale_temp_files(final: Path) -> None:
    """Temp files of ``final`` left by killed exports (called holding its lock: no live
    export of ``final`` owns one)."""
    if final.parent.is_dir():
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            with contextlib.suppress(OSError):
                stale.unlink()

