"""autorec.movielens: registry, real archives, generated layouts, download, cache, errors.

Real archives come from ``$AUTOREC_DATA`` (tests skip without them). Everything else uses
synthetic archives written by ``datasets/fixtures/make_fixtures.py`` with the real
layouts, and a local HTTP server on 127.0.0.1; nothing touches the network.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib.util
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import autorec
from autorec.datasets import movielens
from autorec.data import DataError
from autorec.datasets.movielens import (
    DATASETS, ChecksumError, DownloadError, dataset_path, download, info, load_movielens,
)

REAL_DATA = os.environ.get("AUTOREC_DATA")
_spec = importlib.util.spec_from_file_location(
    "make_fixtures", Path(__file__).resolve().parents[1] / "datasets/fixtures/make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache, no data folder, and a mirror nobody listens on."""
    monkeypatch.setenv("AUTOREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOREC_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.delenv("AUTOREC_DATA", raising=False)
    return tmp_path / "cache"


def real_archive(name: str) -> Path:
    path = Path(REAL_DATA or "/nonexistent") / f"{name}.zip"
    if not path.is_file():
        pytest.skip(f"{name}.zip not in $AUTOREC_DATA")
    return path


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def generated(tmp_path, name, n_ratings=3000, n_users=120, n_items=400, seed=0, **kw) -> dict:
    folder = tmp_path / "generated"
    folder.mkdir(exist_ok=True)
    return make_fixtures.write_archive(folder / f"{name}.zip", name, n_ratings=n_ratings,
                                       n_users=n_users, n_items=n_items, seed=seed, **kw)


def as_frame(R) -> pd.DataFrame:
    return R.to_frame().sort_values(["user", "item"]).reset_index(drop=True)


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for member, payload in members.items():
            zf.writestr(member, payload)
    return path


# ---------------------------------------------------------------------- registry
def test_registry_names_layouts_and_info():
    assert set(DATASETS) == {"ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small"}
    ml10 = DATASETS["ml-10m"]
    assert ml10.archive == "ml-10m.zip" and ml10.ratings_file.startswith("ml-10M100K/")
    assert ml10.url == "https://files.grouplens.org/datasets/movielens/ml-10m.zip"
    assert [DATASETS[n].sep for n in ("ml-1m", "ml-100k", "ml-20m")] == ["::", "\t", ","]
    assert DATASETS["ml-25m"].rating_scale == (0.5, 5.0, 0.5)
    assert DATASETS["ml-1m"].rating_scale == (1, 5, 1)
    facts = info("ml-1m")
    assert facts["n_ratings"] == 1_000_209 and facts["available"] is False
    assert facts["url"] == "http://127.0.0.1:9/ml-1m.zip"  # honours $AUTOREC_MIRROR
    assert "Harper" in facts["citation"]
    assert autorec.load_movielens is load_movielens


@pytest.mark.parametrize("call", [load_movielens, info, dataset_path, download])
def test_unknown_name_lists_the_valid_ones(call):
    with pytest.raises(DataError, match="ml-100k, ml-1m, ml-10m"):
        call("ml-2m")


def test_search_order_data_dir_then_env_then_cache(tmp_path, monkeypatch, isolated):
    dirs = [tmp_path / d for d in ("arg", "env", "cache")]
    for folder in dirs:
        folder.mkdir(exist_ok=True)
        (folder / "ml-1m.zip").write_bytes(b"x")
    monkeypatch.setenv("AUTOREC_CACHE", str(dirs[2]))
    monkeypatch.setenv("AUTOREC_DATA", os.pathsep.join([str(tmp_path / "none"), str(dirs[1])]))
    assert dataset_path("ml-1m", dirs[0]) == dirs[0] / "ml-1m.zip"
    assert dataset_path("ml-1m") == dirs[1] / "ml-1m.zip"
    monkeypatch.delenv("AUTOREC_DATA")
    assert dataset_path("ml-1m") == dirs[2] / "ml-1m.zip"
    assert dataset_path("ml-10m") == dirs[2] / "ml-10m.zip"  # where download() would put it


# ----------------------------------------------------------------- real archives
@pytest.mark.parametrize("name, ratings, users, items", [
    ("ml-100k", 100_000, 943, 1_682),
    ("ml-1m", 1_000_209, 6_040, 3_706),
    ("ml-latest-small", 100_836, 610, 9_724),
])
def test_real_archive_counts(name, ratings, users, items):
    R = load_movielens(name, real_archive(name).parent, download=False)
    assert (R.nnz, R.n_users, R.n_items) == (ratings, users, items)
    assert R.timestamps.shape == (ratings,) and R.users.dtype == np.int64
    assert R.item_info.index.equals(R.items) and R.item_info["title"].notna().all()


def rating_of(R, user, item):
    row = R.users.get_loc(user)
    lo, hi = R.X.indptr[row], R.X.indptr[row + 1]
    pos = lo + np.searchsorted(R.X.indices[lo:hi], R.items.get_loc(item))
    return float(R.X.data[pos]), int(R.timestamps[pos])


def test_real_ml100k_records():
    R = load_movielens("ml-100k", real_archive("ml-100k").parent, download=False)
    assert rating_of(R, 196, 242) == (3.0, 881250949)  # first line of u.data
    assert sorted(np.unique(R.X.data)) == [1, 2, 3, 4, 5]
    info_ = R.item_info
    assert info_.loc[1].tolist() == ["Toy Story (1995)", "Animation|Children's|Comedy", 1995]
    assert info_.loc[543, "title"] == "Misérables, Les (1995)"  # latin-1 in u.item
    assert pd.isna(info_.loc[267, "year"]) and info_.loc[267, "title"] == "unknown"


def test_real_ml1m_records_and_rezip_accepted():
    path = real_archive("ml-1m")
    assert movielens.file_digest(path) != DATASETS["ml-1m"].md5  # a re-zip...
    R = load_movielens("ml-1m", path.parent, download=False)  # ...accepted by content
    assert rating_of(R, 1, 1193) == (5.0, 978300760)  # first line of ratings.dat
    assert R.item_info.loc[73].tolist() == ["Misérables, Les (1995)", "Drama|Musical", 1995]
    assert R.item_info.loc[570, "title"] == "Slingshot, The (Kådisbellan ) (1993)"


def test_real_latest_small_half_stars():
    R = load_movielens("ml-latest-small", real_archive("ml-latest-small").parent,
                       download=False)
    assert rating_of(R, 1, 1) == (4.0, 964982703)
    assert sorted(np.unique(R.X.data)) == [x / 2 for x in range(1, 11)]
    assert R.item_info.loc[1, "genres"] == "Adventure|Animation|Children|Comedy|Fantasy"


def tampered_copy(source: Path, member: str, tmp_path: Path) -> Path:
    """The archive with the first line's rating changed, stored uncompressed (fast)."""
    with zipfile.ZipFile(source) as zf:
        members = {name: zf.read(name) for name in zf.namelist() if not name.endswith("/")}
    first, rest = members[member].split(b"\n", 1)
    fields = first.split(b"\t")
    fields[2] = b"5" if fields[2] != b"5" else b"4"
    members[member] = b"\t".join(fields) + b"\n" + rest
    (tmp_path / "tampered").mkdir()
    return zip_with(tmp_path / "tampered" / source.name, members)


def test_tampered_archive_refused_even_through_the_parsed_cache(tmp_path, isolated):
    path = tampered_copy(real_archive("ml-100k"), "ml-100k/u.data", tmp_path)
    with pytest.raises(ChecksumError) as err:
        load_movielens("ml-100k", path.parent, download=False)
    message = str(err.value)
    expected = DATASETS["ml-100k"].ratings_sha256
    actual = hashlib.sha256(zipfile.ZipFile(path).read("ml-100k/u.data")).hexdigest()
    assert "ml-100k/u.data" in message and expected in message and actual in message
    assert "download it again" in message and "verify=False" in message
    assert files_under(isolated) == []  # nothing cached
    R = load_movielens("ml-100k", path.parent, download=False, verify=False)
    assert rating_of(R, 196, 242)[0] == 5.0 and files_under(isolated / "parsed")
    with pytest.raises(ChecksumError):  # the cached parse does not bypass the check
        load_movielens("ml-100k", path.parent, download=False)


# -------------------------------------------------------------- generated layouts
@pytest.mark.parametrize("name", list(make_fixtures.LAYOUTS))
def test_generated_layouts_load_exactly(tmp_path, name):
    truth = generated(tmp_path, name, user_id_max=500, item_id_max=2000)
    R = load_movielens(name, truth["path"].parent, download=False, verify=False)
    assert (R.nnz, R.n_users, R.n_items) == (3000, 120, 400)
    expected = pd.DataFrame({"user": truth["user"], "item": truth["item"],
                             "rating": truth["rating"].astype(np.float32),
                             "timestamp": truth["timestamp"]})
    pd.testing.assert_frame_equal(as_frame(R), expected.sort_values(["user", "item"])
                                  .reset_index(drop=True), check_dtype=False)
    accented = R.items[R.items % 7 == 0][0]
    assert R.item_info.loc[accented, "title"].startswith("Café")
    assert R.item_info.loc[accented, "year"] == 1920 + accented % 90
    assert len(R.item_info) == R.n_items  # unrated movies of the movies file left out


def test_fixture_archives_load(tmp_path):
    folder = tmp_path  # generated as `python datasets/fixtures/make_fixtures.py` writes them
    for number, name in enumerate(make_fixtures.LAYOUTS):
        make_fixtures.write_archive(folder / f"{name}.zip", name, n_ratings=300, n_users=20,
                                    n_items=40, seed=number)
    for name in DATASETS:
        R = load_movielens(name, folder, download=False, verify=False, cache=False)
        assert (R.nnz, R.n_users, R.n_items) == (300, 20, 40)
        with pytest.raises(ChecksumError):
            load_movielens(name, folder, download=False, cache=False)


# --------------------------------------------------------------------- download
class Mirror(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes, int]] = {}  # path -> (status, body, Content-Length)

    def do_GET(self):  # noqa: N802 (http.server API)
        status, body, length = self.routes.get(self.path, (404, b"not here", 8))
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local server; yields (base URL, the good archive's truth)."""
    truth = generated(tmp_path, "ml-100k", n_ratings=2000, n_users=50, n_items=300)
    good = truth["path"].read_bytes()
    Mirror.routes = {
        "/good/ml-100k.zip": (200, good, len(good)),
        "/truncated/ml-100k.zip": (200, good[: len(good) // 2], len(good)),
        "/error/ml-100k.zip": (500, b"oops", 4),
        "/html/ml-100k.zip": (200, b"<html>moved</html>", 18),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    spec = DATASETS["ml-100k"]
    truth["spec"] = dataclasses.replace(spec, md5=hashlib.md5(good).hexdigest(), n_ratings=2000,
                                        n_users=50, n_items=300, ratings_sha256=None)
    yield f"http://127.0.0.1:{server.server_address[1]}", truth
    server.shutdown()
    server.server_close()


def test_download_end_to_end(mirror, monkeypatch, isolated):
    base, truth = mirror
    monkeypatch.setitem(DATASETS, "ml-100k", truth["spec"])
    monkeypatch.setenv("AUTOREC_MIRROR", f"{base}/good/")
    R = load_movielens("ml-100k", progress=False)
    assert (R.nnz, R.n_users, R.n_items) == (2000, 50, 300)
    assert (isolated / "ml-100k.zip").read_bytes() == truth["path"].read_bytes()
    assert dataset_path("ml-100k") == isolated / "ml-100k.zip"
    assert [p.parent.name for p in files_under(isolated)] == ["cache", "parsed"]


def test_download_function_with_url_and_dest(mirror, monkeypatch, tmp_path):
    base, truth = mirror
    monkeypatch.setitem(DATASETS, "ml-100k", truth["spec"])
    path = download("ml-100k", tmp_path / "here", url=f"{base}/good/ml-100k.zip", progress=False)
    assert path == tmp_path / "here" / "ml-100k.zip" and path.is_file()


@pytest.mark.parametrize("route, error, says", [
    ("truncated", DownloadError, "truncated"),
    ("error", DownloadError, "HTTP 500"),
    ("html", DownloadError, "not a zip archive"),
    ("good", ChecksumError, "not GroupLens. 0e33842e24a9c977be4e0107933c0723"),
])
def test_failed_download_leaves_nothing(mirror, monkeypatch, isolated, route, error, says):
    base, _ = mirror
    monkeypatch.setenv("AUTOREC_MIRROR", f"{base}/{route}/")
    with pytest.raises(error, match=says) as err:
        load_movielens("ml-100k", progress=False)
    assert f"{base}/{route}/ml-100k.zip" in str(err.value)
    assert files_under(isolated) == []


def test_no_download_when_told_not_to(isolated):
    with pytest.raises(DataError, match="not found.*files.grouplens.org"):
        load_movielens("ml-1m", download=False)


def test_unreachable_mirror_says_what_to_do():
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1:9.*AUTOREC_DATA"):
        download("ml-1m", progress=False)


# ----------------------------------------------------------------- parsed cache
def test_second_load_reads_the_parsed_cache(tmp_path, monkeypatch, isolated):
    truth = generated(tmp_path, "ml-10m")
    first = load_movielens("ml-10m", truth["path"].parent, download=False, verify=False)
    [cached] = files_under(isolated / "parsed")
    assert cached.suffix == ".npz" and movielens.file_digest(truth["path"]) in cached.name

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(movielens, "read_ratings", no_parsing)
    second = load_movielens("ml-10m", truth["path"].parent, download=False, verify=False)
    assert (first.X != second.X).nnz == 0 and first.X.dtype == second.X.dtype
    assert first.users.equals(second.users) and first.items.equals(second.items)
    np.testing.assert_array_equal(first.timestamps, second.timestamps)
    pd.testing.assert_frame_equal(first.item_info, second.item_info)
    with pytest.raises(AssertionError, match="parsed again"):
        load_movielens("ml-10m", truth["path"].parent, download=False, verify=False, cache=False)


def test_unreadable_parsed_cache_is_ignored_and_rewritten(tmp_path, isolated):
    truth = generated(tmp_path, "ml-20m")
    R = load_movielens("ml-20m", truth["path"].parent, download=False, verify=False)
    [cached] = files_under(isolated / "parsed")
    cached.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable parsed cache"):
        again = load_movielens("ml-20m", truth["path"].parent, download=False, verify=False)
    assert (R.X != again.X).nnz == 0 and cached.stat().st_size > 1000


# ------------------------------------------------------------------- bad input
def test_corrupted_zip(tmp_path):
    (tmp_path / "ml-1m.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match=r"ml-1m\.zip is not a readable zip archive.*delete"):
        load_movielens("ml-1m", tmp_path, download=False, verify=False)


def test_missing_member(tmp_path):
    zip_with(tmp_path / "ml-1m.zip", {"ml-1m/movies.dat": b"1::A (1999)::Drama\n"})
    with pytest.raises(DataError, match=r"has no ml-1m/ratings\.dat; it holds \['ml-1m/movies"):
        load_movielens("ml-1m", tmp_path, download=False, verify=False)


RATINGS_1M = b"1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n"
CSV_HEADER = b"userId,movieId,rating,timestamp\n"


def test_repeated_pairs_keep_the_latest_rating(tmp_path):
    spec = DATASETS["ml-1m"]
    movies = b"10::A Film (1999)::Drama\n20::No Year::Comedy|Drama\n"
    zip_with(tmp_path / spec.archive, {spec.ratings_file: RATINGS_1M + b"1::10::2::978300999\n",
                                       spec.items_file: movies})
    with pytest.warns(UserWarning, match="repeated"):
        R = load_movielens("ml-1m", tmp_path, download=False, verify=False)
    assert R.nnz == 3 and rating_of(R, 1, 10) == (2.0, 978300999)
    assert R.item_info.loc[20].tolist()[:2] == ["No Year", "Comedy|Drama"]
    assert pd.isna(R.item_info.loc[20, "year"]) and R.item_info.loc[10, "year"] == 1999


@pytest.mark.parametrize("name, payload, says", [
    ("ml-1m", RATINGS_1M + b"2::x3::4::978300761\n", r"line 4: MovieID 'x3' is not a whole"),
    ("ml-1m", RATINGS_1M + b"2::30::4::978300761::9\n", r"line 4: not 4 fields separated by"),
    ("ml-1m", b"1::10::5\n" + RATINGS_1M, r"line 1: not 4 fields"),
    ("ml-1m", RATINGS_1M + b"2:30::4::978300761\n", r"line 4: not 4 fields"),
    ("ml-1m", RATINGS_1M + b"\n2::30::7::978300761\n", r"line 5: rating '7' is not on the 1-5"),
    ("ml-1m", RATINGS_1M + b"2::30::4.5::978300761\n", r"line 4: rating '4.5' is not on the 1-5"),
    ("ml-1m", b"", r"the file holds no ratings"),
    ("ml-10m", RATINGS_1M.replace(b"::5::", b"::4.25::"),
     r"line 1: rating '4.25' is not on the 0.5-5 scale in steps of 0.5"),
    ("ml-100k", b"1\t10\t5\t978300760\n1\t20\t3\n", r"line 2: not 4 fields separated by '\\t'"),
    ("ml-20m", b"user,movie,rating,timestamp\n1,10,5.0,9\n", r"line 1: the header is 'user,movie"),
    ("ml-20m", CSV_HEADER + b"1,10,5.0,978300760\n1,-2,3.0,1\n", r"line 3: movieId '-2'"),
    ("ml-25m", CSV_HEADER + b"1,10,5.0,978300760\n1,11,5.0\n", r"line 3: not 4 fields"),
])
def test_malformed_lines_are_named(tmp_path, isolated, name, payload, says):
    spec = DATASETS[name]
    zip_with(tmp_path / spec.archive, {spec.ratings_file: payload, spec.items_file: b""})
    with pytest.raises(DataError, match=says) as err:
        load_movielens(name, tmp_path, download=False, verify=False)
    assert f"{spec.ratings_file} in {tmp_path / spec.archive}" in str(err.value)
    assert files_under(isolated) == []


def test_unwritable_cache_folder_is_a_clear_error(mirror, monkeypatch, tmp_path):
    base, truth = mirror
    monkeypatch.setitem(DATASETS, "ml-100k", truth["spec"])
    (tmp_path / "a-file").write_bytes(b"")
    monkeypatch.setenv("AUTOREC_CACHE", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(DownloadError, match="could not save .* writable folder"):
        download("ml-100k", url=f"{base}/good/ml-100k.zip", progress=False)
