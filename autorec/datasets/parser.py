"""The fast MovieLens ratings parser, with line-exact diagnostics, and the movies parser.

``read_ratings`` hands the file to pandas' C parser with fixed dtypes (the fast path); only
when that fails does a block-wise scan find the first bad line, so an error names the file,
line, column and value. Layouts come from :class:`autorec.datasets.movielens.MovieLensSpec`.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
import pandas as pd

from ..exceptions import DataError

BLOCK_BYTES = 16 << 20  # diagnostic scan of a malformed ratings file

_DTYPES = (np.int64, np.int64, np.float32, np.int64)  # user, item, rating, timestamp


class _SeparatorCounter(io.RawIOBase):
    """Binary stream wrapper that counts one separator byte as the parser reads through."""

    def __init__(self, stream, byte: bytes):
        self._stream, self._byte, self.count = stream, byte, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self.count += data.count(self._byte)
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def _positions(layout) -> list[int]:
    """Positions of user, item, rating, timestamp among the fields split on ``sep[0]``."""
    return [0, 2, 4, 6] if layout.sep == "::" else [0, 1, 2, 3]


def _on_scale(rating: np.ndarray, scale) -> np.ndarray:
    lo, hi, step = scale
    steps = (rating - lo) / step
    return (rating >= lo) & (rating <= hi) & (steps == np.round(steps))


def read_ratings(open_source: Callable, layout, where: str):
    """Parse a ratings file into user, item, rating and timestamp arrays.

    ``open_source()`` returns a fresh binary stream of the file; ``layout`` (a
    MovieLensSpec) gives ``sep``, ``header``, ``columns`` and ``rating_scale``; ``where``
    names the file in errors. pandas' C parser reads the file with a one-character
    separator (``"::"`` as ``":"``, keeping the even fields: rating lines hold no other
    colon) while a wrapper counts the separators. A parse error, a wrong separator count or
    a value off the scale triggers a second pass that names the first bad line.
    """
    names, fields = list(layout.columns), _positions(layout)
    keys = names if layout.header else fields
    counter = _SeparatorCounter(open_source(), layout.sep[:1].encode())
    try:
        with counter:
            frame = pd.read_csv(counter, sep=layout.sep[0], header=0 if layout.header else None,
                                usecols=keys, dtype=dict(zip(keys, _DTYPES)), engine="c",
                                na_filter=False)
    except ValueError as exc:  # ParserError, EmptyDataError, bad literal, header mismatch
        raise _malformed(open_source, layout, where, exc) from exc
    user, item, rating, timestamp = (frame[key].to_numpy() for key in keys)
    ok = (len(frame) > 0
          and counter.count == 3 * len(layout.sep) * (len(frame) + layout.header)
          and (user >= 0).all() and (item >= 0).all() and (timestamp >= 0).all()
          and _on_scale(rating, layout.rating_scale).all())
    if not ok:
        raise _malformed(open_source, layout, where, None)
    return user, item, rating, timestamp


def _malformed(open_source, layout, where: str, exc) -> DataError:
    problem = _first_bad_line(open_source, layout) or (
        f"could not parse it ({exc})" if exc else "its separators or values are unexpected")
    header = f" after the header {layout.sep.join(layout.columns)!r}" if layout.header else ""
    return DataError(f"{where}: {problem}. Expected lines of {', '.join(layout.columns)} "
                     f"separated by {layout.sep!r}{header}. The file is damaged or not in "
                     "the expected layout: delete the archive and download it again")


def _first_bad_line(open_source, layout) -> str | None:
    """Scan the file block by block (vectorised within a block) for its first bad line."""
    done, rest = 0, b""  # lines before the current block; incomplete last line
    with open_source() as stream:
        while True:
            chunk = stream.read(BLOCK_BYTES)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            block, rest = data[:cut], data[cut:]
            if block:
                problem = _check_block(block, layout, done)
                if problem:
                    return problem
                done += block.count(b"\n") + (not block.endswith(b"\n"))
            if not chunk:
                return None if done > layout.header else "the file holds no ratings"


def _check_block(block: bytes, layout, done: int) -> str | None:
    """First bad line among the whole lines of ``block`` (``done`` lines precede it)."""
    buf = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    if not block.endswith(b"\n"):
        ends = np.append(ends, len(buf))
    starts = np.concatenate(([0], ends[:-1] + 1))

    def text(i: int) -> str:
        return block[starts[i]:ends[i]].decode("latin-1").rstrip("\r")

    seps = np.concatenate(([0], np.cumsum(buf == ord(layout.sep[0]), dtype=np.int32)))
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (buf[np.minimum(starts, len(buf) - 1)] == 13))
    bad = (seps[ends] - seps[starts] != 3 * len(layout.sep)) & ~blank
    has_header = bool(layout.header and done == 0)
    if has_header:
        if text(0) != layout.sep.join(layout.columns):
            return f"line 1: the header is {text(0)!r}"
        bad[0] = False
    first = int(np.argmax(bad)) if bad.any() else len(ends)
    problem = _check_values(block[: starts[first]] if first < len(ends) else block, layout,
                            skip_first=has_header)
    if problem is not None:
        return f"line {done + problem[0] + 1}: {problem[1]} in {text(problem[0])!r}"
    if first < len(ends):
        return (f"line {done + first + 1}: not 4 fields separated by {layout.sep!r}: "
                f"{text(first)!r}")
    return None


def _check_values(data: bytes, layout, skip_first: bool) -> tuple[int, str] | None:
    """(line index, what is wrong) of the first bad value in ``data``, or None."""
    if not data:
        return None
    positions = _positions(layout)
    frame = pd.read_csv(io.BytesIO(data), sep=layout.sep[0], header=None, engine="c",
                        names=range(positions[-1] + 1), dtype=str, na_filter=False,
                        skip_blank_lines=False, index_col=False, quoting=3)  # QUOTE_NONE
    cells = frame.to_numpy(dtype=object)
    ignore = (cells == "").all(axis=1)
    ignore[0] |= skip_first
    checks = [(positions[k], f"{layout.columns[k]} {{!r}} is not a whole number",
               ~frame[positions[k]].str.fullmatch(r"\d+").to_numpy(bool)) for k in (0, 1, 3)]
    rating = pd.to_numeric(frame[positions[2]], errors="coerce").to_numpy()
    lo, hi, step = layout.rating_scale
    checks.append((positions[2], f"rating {{!r}} is not on the {lo:g}-{hi:g} scale in steps "
                   f"of {step:g}", ~_on_scale(rating, layout.rating_scale)))
    for j in sorted(set(range(cells.shape[1])) - set(positions)):  # between the ':' of '::'
        checks.append((j, "{!r} between two fields", cells[:, j] != ""))
    found = [(int(np.flatnonzero(wrong & ~ignore)[0]), column, message)
             for column, message, wrong in checks if (wrong & ~ignore).any()]
    if not found:
        return None
    row, column, message = min(found, key=lambda f: f[0])
    return row, message.format(cells[row, column])


# --------------------------------------------------------------------- movies
_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
                  "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
                  "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")  # u.genre
_TITLE_YEAR = r"\((\d{4})(?:[-\u2013]\d{4})?\)\s*$"  # "Heat (1995)", "Show (1975-1979)"


def read_items(raw: bytes, spec, where: str) -> pd.DataFrame:
    """``title``, ``genres`` (``|``-joined) and ``year`` of the movies, by item id.

    Text is UTF-8 when it decodes as such, else ``spec.encoding``. ``year`` is the
    title's trailing ``(YYYY)`` (ml-100k: else the release date's), missing otherwise.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode(spec.encoding)
    try:
        if spec.items_format == "u.item":  # id|title|release date|video date|url|19 flags
            table = pd.read_csv(io.StringIO(text), sep="|", header=None, dtype=str,
                                keep_default_na=False, quoting=3)
            ids, titles, released = table[0], table[1], table[2]
            flags = table.iloc[:, 5:5 + len(_ML100K_GENRES)].to_numpy() == "1"
            genres = pd.Series("", index=table.index)
            for j, genre in enumerate(_ML100K_GENRES):  # loops over 19 genres, not items
                genres = genres.where(~flags[:, j], genres + "|" + genre)
            genres = genres.str.lstrip("|")
        elif spec.items_format == "dat":  # MovieID::Title::Genres
            lines = pd.Series(text.splitlines())
            table = lines[lines != ""].str.split("::", n=2, expand=True, regex=False)
            ids, titles, genres = table[0], table[1], table[2]
        else:  # csv: movieId,title,genres
            table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            ids, titles, genres = table["movieId"], table["title"], table["genres"]
    except (ValueError, KeyError) as exc:
        raise DataError(f"{where}: could not parse the movies ({exc}); delete the archive "
                        "and download it again") from exc
    item_id = pd.to_numeric(ids, errors="coerce")
    if item_id.isna().any():
        bad = ids[item_id.isna()].iloc[0]
        raise DataError(f"{where}: movie id {bad!r} is not a number; delete the archive and "
                        "download it again")
    year = pd.to_numeric(titles.str.extract(_TITLE_YEAR, expand=False), errors="coerce")
    if spec.items_format == "u.item":
        year = year.fillna(pd.to_numeric(released.str[-4:], errors="coerce"))
    frame = pd.DataFrame({"title": titles.to_numpy(), "genres": genres.fillna("").to_numpy(),
                          "year": year.astype("Int64").array},
                         index=pd.Index(item_id.to_numpy(np.int64), name="item"))
    return frame[~frame.index.duplicated()]
