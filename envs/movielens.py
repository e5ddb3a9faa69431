"""MovieLens files -> the low-rank preference model of the contextual bandit.

The published contextual-bandit setup rates (user, movie) pairs with a rank-d
SVD of the MovieLens rating matrix. This module reads the files a user has
downloaded themselves (nothing is fetched) and builds that model:

- ratings: ml-100k ``u.data`` (``user item rating timestamp``, tab-separated,
  no header) or ml-latest ``ratings.csv`` (header
  ``userId,movieId,rating,timestamp``); the format is detected from line 1;
- users (optional): ml-100k ``u.user`` (``id|age|gender|occupation|zip``);
- movies (optional): ml-100k ``u.item`` (``id|title|...|19 genre flags``,
  latin-1) or ml-latest ``movies.csv`` (``movieId,title,genres``).

The model: keep movies with at least ``min_ratings`` ratings, then users with
at least ``min_ratings`` ratings of those movies; subtract the global mean;
fit a rank-d SVD, imputing the missing entries by iterating the fit
(SVD-impute: start from the mean, replace the missing entries by the rank-d
reconstruction, refit; ``impute_iters=0`` is the plain SVD of the zero-filled
centred matrix, which shrinks every prediction towards the mean in proportion
to how sparse the matrix is). User vectors are ``U sqrt(S)``, movie vectors
``V sqrt(S)``, so the expected rating is ``mean + user . movie``, not clipped
(see :mod:`agentbench.envs.contextual`). Each episode draws its K movies from
the ``movie_pool`` most-rated movies, where the fit is best supported.

Every problem with the input is a ConfigError naming the file, line or value.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentbench.envs.contextual import MovieBatch, UserBatch, expected_ratings
from agentbench.errors import ConfigError

# A dense float64 matrix this large takes 400 MB; beyond it raise min_ratings.
MAX_MATRIX_ENTRIES = 50_000_000
# Far beyond any rating scale, and small enough that the mean, and the squares the SVD
# sums over a MAX_MATRIX_ENTRIES matrix, stay finite (a rating of 1e308 made them inf).
MAX_ABS_RATING = 1e100
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# The genre flags of ml-100k u.item, in file order.
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_GENDER_WORDS = {"m": "male", "f": "female"}

_UDATA_FORMAT = "ml-100k u.data (tab-separated user item rating timestamp, no header)"
_CSV_FORMAT = "ml-latest ratings.csv (header userId,movieId,rating,timestamp)"


@dataclass(frozen=True, eq=False)
class MovieLensPreferences:
    """A rank-d SVD model of a MovieLens rating matrix (a ``PreferenceModel``).

    Rows of ``user_vectors`` / ``movie_vectors`` align with ``user_ids`` /
    ``movie_ids`` (the ids in the files); ``pool`` indexes the movies episodes
    draw from. Build it with :func:`load_movielens`.
    """

    rank: int
    offset: float  # the global mean rating
    user_ids: np.ndarray
    user_vectors: np.ndarray  # (n_users, rank)
    user_attributes: tuple[dict[str, Any], ...]
    movie_ids: np.ndarray
    movie_vectors: np.ndarray  # (n_movies, rank)
    movie_titles: tuple[str, ...]
    movie_genres: tuple[tuple[str, ...], ...]
    movie_counts: np.ndarray  # ratings per movie after filtering
    pool: np.ndarray  # indices of the most-rated movies, the episodes' candidates
    source: str
    scale: float = 1.0

    @property
    def user_bound(self) -> float:
        """Largest absolute coordinate of any user, so the observation Box holds them all."""
        return float(np.abs(self.user_vectors).max())

    @property
    def n_movies(self) -> int:
        """Movies one episode can draw: the pool of most-rated movies."""
        return int(len(self.pool))

    def sample_movies(self, n: int, rng: np.random.Generator) -> MovieBatch:
        """``n`` distinct movies from the pool."""
        if n > len(self.pool):
            raise ConfigError(
                f"{n} movies requested but {self.source} offers only {len(self.pool)}"
            )
        picks = rng.choice(self.pool, size=n, replace=False)
        return MovieBatch(
            titles=tuple(self.movie_titles[i] for i in picks),
            genres=tuple(self.movie_genres[i] for i in picks),
            vectors=self.movie_vectors[picks].copy(),
        )

    def sample_users(self, n: int, rng: np.random.Generator) -> UserBatch:
        """``n`` users drawn uniformly with replacement."""
        picks = rng.integers(len(self.user_ids), size=n)
        return UserBatch(
            vectors=self.user_vectors[picks].copy(),
            attributes=tuple(dict(self.user_attributes[i]) for i in picks),
        )

    def fitted_ratings(self) -> np.ndarray:
        """The model's expected rating of every (user, movie), shape (n_users, n_movies)."""
        return expected_ratings(self, self.user_vectors, self.movie_vectors)


def load_movielens(
    ratings_path: str | Path,
    users_path: str | Path | None = None,
    movies_path: str | Path | None = None,
    rank: int = 5,
    min_ratings: int = 20,
    movie_pool: int = 100,
    impute_iters: int = 10,
) -> MovieLensPreferences:
    """Read MovieLens files and fit the rank-``rank`` preference model (module docstring)."""
    for name, value, minimum in (
        ("rank", rank, 1),
        ("min_ratings", min_ratings, 1),
        ("movie_pool", movie_pool, 2),
        ("impute_iters", impute_iters, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ConfigError(
                f"{name}={value!r} is out of range: accepted are integers >= {minimum}"
            )

    ratings_file = str(ratings_path)
    user_col, movie_col, rating_col = _read_ratings(ratings_file)
    # Read the optional files before the fit, so that a bad path fails fast.
    attributes = _read_users(str(users_path)) if users_path is not None else {}
    titles, genres = _read_movies(str(movies_path)) if movies_path is not None else ({}, {})

    # Filter movies first (the arms), then users on what is left.
    movie_ids, movie_index, movie_counts = np.unique(
        movie_col, return_inverse=True, return_counts=True
    )
    keep = movie_counts[movie_index] >= min_ratings
    user_col, movie_col, rating_col = user_col[keep], movie_col[keep], rating_col[keep]
    user_ids, user_index, user_counts = np.unique(user_col, return_inverse=True, return_counts=True)
    keep = user_counts[user_index] >= min_ratings
    user_col, movie_col, rating_col = user_col[keep], movie_col[keep], rating_col[keep]
    user_ids, user_index = np.unique(user_col, return_inverse=True)
    movie_ids, movie_index, movie_counts = np.unique(
        movie_col, return_inverse=True, return_counts=True
    )
    n_users, n_movies = len(user_ids), len(movie_ids)
    if n_users == 0 or n_movies == 0:
        raise ConfigError(
            f"no ratings of {ratings_file!r} survive min_ratings={min_ratings} (movies and users "
            "with fewer ratings are dropped): lower min_ratings"
        )
    if min(n_users, n_movies) < 2:
        raise ConfigError(
            f"{ratings_file!r} has {n_users} users x {n_movies} movies with at least "
            f"{min_ratings} ratings: a rank-1 model needs at least 2 of each, lower min_ratings"
        )
    if rank >= min(n_users, n_movies):
        raise ConfigError(
            f"rank={rank} is too large for the {n_users} users x {n_movies} movies of "
            f"{ratings_file!r} with at least {min_ratings} ratings: accepted are ranks "
            f"1..{min(n_users, n_movies) - 1}"
        )
    if n_users * n_movies > MAX_MATRIX_ENTRIES:
        raise ConfigError(
            f"the rating matrix of {ratings_file!r} has {n_users} users x {n_movies} movies, "
            f"more than the {MAX_MATRIX_ENTRIES:,} entries the dense SVD handles: "
            f"raise min_ratings={min_ratings}"
        )

    offset = float(rating_col.mean())
    centred = np.zeros((n_users, n_movies))
    observed = np.zeros((n_users, n_movies), dtype=bool)
    centred[user_index, movie_index] = rating_col - offset
    observed[user_index, movie_index] = True
    u, s, vt = _svd_impute(centred, observed, rank, impute_iters)
    root = np.sqrt(s)

    # Most-rated first; ties by id so the pool does not depend on sort stability.
    order = np.lexsort((movie_ids, -movie_counts))
    return MovieLensPreferences(
        rank=rank,
        offset=offset,
        user_ids=user_ids,
        user_vectors=u * root,
        user_attributes=tuple(attributes.get(int(uid), {"id": int(uid)}) for uid in user_ids),
        movie_ids=movie_ids,
        movie_vectors=vt.T * root,
        movie_titles=tuple(titles.get(int(mid), f"movie {int(mid)}") for mid in movie_ids),
        movie_genres=tuple(genres.get(int(mid), ()) for mid in movie_ids),
        movie_counts=movie_counts,
        pool=np.sort(order[:movie_pool]),
        source=(
            f"the MovieLens ratings {ratings_file!r} (the {min(movie_pool, n_movies)} most-rated "
            f"movies with at least {min_ratings} ratings)"
        ),
    )


# ---------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------


def _svd_impute(
    centred: np.ndarray, observed: np.ndarray, rank: int, iters: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-``rank`` SVD of a matrix with missing entries (0 at first), refilled ``iters`` times."""
    filled = centred
    u, s, vt = _truncated_svd(filled, rank)
    for _ in range(iters):
        filled = np.where(observed, centred, (u * s) @ vt)
        u, s, vt = _truncated_svd(filled, rank)
    return u, s, vt


def _truncated_svd(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` singular triplets, deterministic up to the sign convention below."""
    if min(matrix.shape) <= 1000:
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    else:
        from scipy.sparse.linalg import svds

        # A fixed start vector: ARPACK's own is random, so repeated loads would differ.
        start = np.random.default_rng(0).standard_normal(min(matrix.shape))
        u, s, vt = svds(matrix, k=rank, v0=start, solver="arpack")
        order = np.argsort(-s)
        u, s, vt = u[:, order], s[order], vt[order]
    # Singular vectors are defined up to sign; fix it so loads are reproducible across
    # LAPACK builds: the largest movie coordinate of each component is positive.
    signs = np.sign(vt[np.arange(rank), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return u * signs, s, vt * signs[:, None]


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------


def _read_lines(path: str, what: str) -> list[str]:
    """The lines of a text file (utf-8, else latin-1 as ml-100k uses), or a ConfigError."""
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"{what} {path!r} does not exist: give the path of a MovieLens file")
    if not file.is_file():
        raise ConfigError(f"{what} {path!r} is not a file: give the path of a MovieLens file")
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise ConfigError(f"{what} {path!r} cannot be read: {error.strerror}") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise ConfigError(f"{what} {path!r} is empty: it needs at least one line of data")
    return lines


def _read_ratings(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User ids, movie ids and ratings of every line, in either accepted format."""
    what = "ratings file"
    lines = _read_lines(path, what)
    first = next(i for i, line in enumerate(lines) if line.strip())
    header = lines[first].strip()
    if header.lower().startswith("userid"):
        columns = [c.strip() for c in header.split(",")]
        try:
            picks = [columns.index(name) for name in ("userId", "movieId", "rating")]
        except ValueError:
            raise ConfigError(
                f"line {first + 1} of {what} {path!r} is the header {header!r}: accepted is "
                f"{_CSV_FORMAT}"
            ) from None
        n_columns, split, fmt, start = len(columns), _split_comma, _CSV_FORMAT, first + 1
    elif len(header.split()) == 4:
        picks, n_columns, split, fmt, start = [0, 1, 2], 4, str.split, _UDATA_FORMAT, first
    else:
        raise ConfigError(
            f"line {first + 1} of {what} {path!r} ({header[:60]!r}) is in neither accepted "
            f"format: {_UDATA_FORMAT} or {_CSV_FORMAT}"
        )

    users: list[int] = []
    movies: list[int] = []
    ratings: list[float] = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        fields = split(line)
        if len(fields) != n_columns:
            raise ConfigError(
                f"line {number} of {what} {path!r} has {len(fields)} columns where {n_columns} "
                f"are expected: accepted is {fmt}"
            )
        users.append(_parse_int(fields[picks[0]], "user id", number, what, path))
        movies.append(_parse_int(fields[picks[1]], "movie id", number, what, path))
        ratings.append(_parse_rating(fields[picks[2]], number, what, path))
        line_numbers.append(number)
    if not ratings:
        raise ConfigError(f"{what} {path!r} has a header but no ratings: accepted is {fmt}")
    user_col, movie_col = np.array(users, dtype=np.int64), np.array(movies, dtype=np.int64)
    _check_no_duplicates(user_col, movie_col, np.array(line_numbers), what, path)
    return user_col, movie_col, np.array(ratings, dtype=np.float64)


def _check_no_duplicates(
    users: np.ndarray, movies: np.ndarray, line_numbers: np.ndarray, what: str, path: str
) -> None:
    """ConfigError naming the lines if a (user, movie) pair is rated twice.

    Vectorised rather than a dict of pairs: ml-latest has tens of millions of lines.
    """
    pairs = np.stack([users, movies], axis=1)
    _, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
    repeated = np.flatnonzero(first[inverse.ravel()] != np.arange(len(pairs)))
    if len(repeated):
        row = repeated[0]
        original = first[inverse.ravel()[row]]
        raise ConfigError(
            f"line {line_numbers[row]} of {what} {path!r} rates movie {movies[row]} by user "
            f"{users[row]} a second time (first on line {line_numbers[original]}): accepted is "
            "one rating per pair"
        )


def _read_users(path: str) -> dict[int, dict[str, Any]]:
    """ml-100k ``u.user``: id -> attributes (age, gender, occupation, location)."""
    what = "users file"
    attributes: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(_read_lines(path, what), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 5:
            raise ConfigError(
                f"line {number} of {what} {path!r} has {len(fields)} '|'-separated columns where "
                "5 are expected: accepted is ml-100k u.user (id|age|gender|occupation|zip)"
            )
        user = _parse_int(fields[0], "user id", number, what, path)
        age = _parse_int(fields[1], "age", number, what, path)
        gender, occupation, zip_code = fields[2], fields[3], fields[4]
        attributes[user] = {
            "id": user,
            "age": age,
            "gender": _GENDER_WORDS.get(gender.lower(), gender.lower()),
            "occupation": occupation.lower(),
            "location": f"zip code {zip_code}" if zip_code else "",
        }
    return attributes


def _read_movies(path: str) -> tuple[dict[int, str], dict[int, tuple[str, ...]]]:
    """ml-100k ``u.item`` or ml-latest ``movies.csv``: id -> title, id -> genres."""
    what = "movies file"
    lines = _read_lines(path, what)
    titles: dict[int, str] = {}
    genres: dict[int, tuple[str, ...]] = {}
    first = next(i for i, line in enumerate(lines) if line.strip())
    if lines[first].strip().lower().startswith("movieid"):
        fmt = "ml-latest movies.csv (header movieId,title,genres)"
        rows = enumerate(csv.reader(lines[first + 1 :]), start=first + 2)
        for number, fields in rows:
            if not fields:
                continue
            if len(fields) != 3:
                raise ConfigError(
                    f"line {number} of {what} {path!r} has {len(fields)} columns where 3 are "
                    f"expected: accepted is {fmt}"
                )
            movie = _parse_int(fields[0], "movie id", number, what, path)
            titles[movie] = fields[1].strip()
            genres[movie] = tuple(
                g for g in fields[2].split("|") if g and g != "(no genres listed)"
            )
    else:
        fmt = "ml-100k u.item (id|title|... with '|' separators)"
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) < 2:
                raise ConfigError(
                    f"line {number} of {what} {path!r} has no '|' separator: accepted is {fmt} "
                    "or ml-latest movies.csv (header movieId,title,genres)"
                )
            movie = _parse_int(fields[0], "movie id", number, what, path)
            titles[movie] = fields[1].strip()
            flags = fields[5:]
            if len(flags) == len(_ML100K_GENRES):
                genres[movie] = tuple(
                    g for g, flag in zip(_ML100K_GENRES, flags, strict=True) if flag.strip() == "1"
                )
    return titles, genres


def _split_comma(line: str) -> list[str]:
    return line.split(",")


def _parse_int(field: str, name: str, number: int, what: str, path: str) -> int:
    try:
        value = int(field.strip())
    except ValueError:
        value = None
    if value is None or not _INT64_MIN <= value <= _INT64_MAX:
        raise ConfigError(
            f"line {number} of {what} {path!r} has {name} {field.strip()!r}: accepted are "
            f"integers from {_INT64_MIN} to {_INT64_MAX} (ids are stored as 64-bit integers)"
        )
    return value


def _parse_rating(field: str, number: int, what: str, path: str) -> float:
    try:
        rating = float(field.strip())
    except ValueError:
        rating = math.nan
    if not math.isfinite(rating) or abs(rating) > MAX_ABS_RATING:
        raise ConfigError(
            f"line {number} of {what} {path!r} has rating {field.strip()!r}: accepted are "
            f"numbers such as 4 or 3.5, of magnitude at most {MAX_ABS_RATING:g}"
        )
    return rating
