"""Contextual bandit: recommend one of K movies to each arriving user (SPEC.md 1.2).

The published setup rates (user, movie) pairs with a low-rank model of the
MovieLens rating matrix. Data cannot be downloaded here, so the default
preference model is a semi-synthetic equivalent with the same structure
(:class:`SyntheticPreferences`); :func:`make_movielens_env` builds the same env
from a real MovieLens ratings file (:mod:`agentbench.envs.movielens`).

Both models share one rating formula, :func:`expected_ratings`:

    expected rating = offset + scale * (user . movie)

and the env adds Gaussian noise. The formula is linear in the user vector,
which is exactly the assumption of LinUCB, the classic baseline; expected
ratings are therefore not clipped to the 1..5 scale (clipping would break the
linearity for a few extreme users).

Common random numbers: ``reset`` draws the episode's movies, every user of the
episode (one per step) and a noise table of shape ``(horizon, n_arms)``. The
reward of arm ``a`` at step ``t`` is fixed at reset, so two agents run with the
same seed meet the same users and get the same reward whenever they pick the
same arm at the same step; comparisons between agents are paired.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from agentbench.envs.protocol import (
    INFO_ACTION_LABEL,
    INFO_LEGAL_ACTIONS,
    check_action,
    format_transition,
)
from agentbench.errors import ConfigError

# ---------------------------------------------------------------------------
# Preference models
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MovieBatch:
    """The K movies of one episode: titles, genres (possibly empty) and latent vectors."""

    titles: tuple[str, ...]
    genres: tuple[tuple[str, ...], ...]
    vectors: np.ndarray  # (K, rank) float64


@dataclass(frozen=True, eq=False)
class UserBatch:
    """Users of one episode, one per step: latent vectors and text attributes."""

    vectors: np.ndarray  # (n, rank) float64
    attributes: tuple[dict[str, Any], ...]


@runtime_checkable
class PreferenceModel(Protocol):
    """Where users, movies and ratings come from.

    The env only needs to draw movies and users from its generator and to know
    the constants of :func:`expected_ratings`; a model of new data (another
    ratings site, a learned embedding) implements these members.
    """

    rank: int  # dimension of the latent vectors (and of the observation)
    offset: float  # expected rating of a user with a zero vector
    scale: float  # multiplies user . movie
    user_bound: float  # every user vector lies in [-user_bound, user_bound]^rank
    n_movies: int  # how many distinct movies one episode can draw
    source: str  # what the model was built from, for error messages

    def sample_movies(self, n: int, rng: np.random.Generator) -> MovieBatch:
        """Draw ``n`` distinct movies for one episode."""

    def sample_users(self, n: int, rng: np.random.Generator) -> UserBatch:
        """Draw ``n`` users (with replacement), one per step."""


def expected_ratings(model: PreferenceModel, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """Expected rating of every (user, movie) pair: ``offset + scale * users @ movies.T``.

    The one place the rating formula lives; the env, the tests and any oracle
    use it, so they cannot disagree.
    """
    return model.offset + model.scale * (np.asarray(users) @ np.asarray(movies).T)


# Word lists of the synthetic model. Titles are adjective + noun, so two-word,
# short and free of the "=" that the ACTION= answer format uses.
_TITLE_ADJECTIVES = (
    "Midnight", "Silent", "Crimson", "Golden", "Broken", "Hidden", "Electric",
    "Frozen", "Last", "Wild", "Velvet", "Iron", "Paper", "Distant", "Burning",
    "Lonely", "Secret", "Northern", "Glass", "Restless",
)  # fmt: skip
_TITLE_NOUNS = (
    "Harbor", "Orchard", "Frontier", "Empire", "Lantern", "River", "Garden",
    "Signal", "Horizon", "Kingdom", "Circus", "Voyage", "Letter", "Mountain",
    "Carnival", "Storm", "Compass", "Island", "Summer", "Machine",
)  # fmt: skip
_GENRES = (
    "drama", "comedy", "action", "thriller", "romance",
    "science fiction", "horror", "animation", "documentary", "western",
)  # fmt: skip
_GENDERS = ("female", "male")
_OCCUPATIONS = (
    "engineer", "teacher", "nurse", "student", "artist", "lawyer", "doctor",
    "programmer", "farmer", "writer", "chef", "accountant", "scientist",
    "salesperson", "librarian", "electrician", "musician", "journalist",
    "architect", "mechanic",
)  # fmt: skip
_LOCATIONS = (
    "Ohio", "Texas", "California", "New York", "Florida", "Oregon", "Maine",
    "Georgia", "Colorado", "Michigan", "Arizona", "Minnesota", "Virginia",
    "Nevada", "Alaska", "Tennessee", "Iowa", "Vermont", "Utah", "Kansas",
)  # fmt: skip
_AGE_RANGE = (18, 75)  # inclusive


@dataclass(frozen=True)
class SyntheticPreferences:
    """Users and movies as random latent vectors, a stand-in for the MovieLens SVD.

    Users: each coordinate is standard normal (clipped to ``user_bound``), so
    that ``user . movie`` has the spread of a rating deviation. Two text
    attributes are mildly informative, so that an agent reading words sees the
    same structure as one reading numbers: the first coordinate is
    ``0.6 * standardised age + 0.8 * noise`` and, when ``rank >= 2``, the second
    is ``0.6 * (+1 female, -1 male) + 0.8 * noise``. Occupation and location
    are flavour only.

    Movies: each has a genre; movies of the same genre in one episode share a
    genre prototype (``0.6 * prototype + 0.8 * noise``, scaled by
    ``1/sqrt(rank)``), so a user who likes one drama tends to like the others.

    With the defaults the expected rating is about 3 +- 0.8 (one standard
    deviation), i.e. mostly within 1..5.
    """

    rank: int = 5
    offset: float = 3.0
    scale: float = 0.8
    user_bound: float = 4.0
    source: str = "the synthetic preference model"

    def __post_init__(self) -> None:
        _check_int("rank", self.rank, 1)

    @property
    def n_movies(self) -> int:
        """Distinct titles the word lists can make."""
        return len(_TITLE_ADJECTIVES) * len(_TITLE_NOUNS)

    def sample_movies(self, n: int, rng: np.random.Generator) -> MovieBatch:
        """``n`` distinct made-up titles with genre-correlated latent vectors."""
        picks = rng.choice(self.n_movies, size=n, replace=False)
        titles = tuple(
            f"{_TITLE_ADJECTIVES[i // len(_TITLE_NOUNS)]} {_TITLE_NOUNS[i % len(_TITLE_NOUNS)]}"
            for i in picks
        )
        genre_index = rng.integers(len(_GENRES), size=n)
        prototypes = rng.standard_normal((len(_GENRES), self.rank))
        noise = rng.standard_normal((n, self.rank))
        vectors = (0.6 * prototypes[genre_index] + 0.8 * noise) / math.sqrt(self.rank)
        genres = tuple((_GENRES[g],) for g in genre_index)
        return MovieBatch(titles, genres, vectors)

    def sample_users(self, n: int, rng: np.random.Generator) -> UserBatch:
        """``n`` users with age, gender, occupation, location and a latent vector."""
        low, high = _AGE_RANGE
        ages = rng.integers(low, high + 1, size=n)
        genders = rng.integers(len(_GENDERS), size=n)
        occupations = rng.integers(len(_OCCUPATIONS), size=n)
        locations = rng.integers(len(_LOCATIONS), size=n)
        vectors = rng.standard_normal((n, self.rank))
        # Standardise the uniform age so the informative coordinate keeps unit variance.
        age_z = (ages - (low + high) / 2) / math.sqrt(((high - low + 1) ** 2 - 1) / 12)
        vectors[:, 0] = 0.6 * age_z + 0.8 * vectors[:, 0]
        if self.rank >= 2:
            vectors[:, 1] = 0.6 * np.where(genders == 0, 1.0, -1.0) + 0.8 * vectors[:, 1]
        vectors = np.clip(vectors, -self.user_bound, self.user_bound)
        attributes = tuple(
            {
                "age": int(ages[i]),
                "gender": _GENDERS[genders[i]],
                "occupation": _OCCUPATIONS[occupations[i]],
                "location": _LOCATIONS[locations[i]],
            }
            for i in range(n)
        )
        return UserBatch(vectors, attributes)


# ---------------------------------------------------------------------------
# Users in words
# ---------------------------------------------------------------------------

# MovieLens occupations that are fields rather than persons.
_OCCUPATION_NOUNS = {
    "entertainment": "entertainment worker",
    "healthcare": "healthcare worker",
    "marketing": "marketing professional",
    "none": "person with no occupation",
    "other": "person",
}


def user_phrase(attributes: dict[str, Any]) -> str:
    """A short description, e.g. ``34-year-old female engineer from Ohio``.

    Uses whatever attributes are present; a user known only by id is ``user 17``.
    """
    words = []
    if attributes.get("age") is not None:
        words.append(f"{attributes['age']}-year-old")
    if attributes.get("gender"):
        words.append(str(attributes["gender"]))
    occupation = attributes.get("occupation")
    if occupation:
        words.append(_OCCUPATION_NOUNS.get(str(occupation), str(occupation)))
    elif words:
        words.append("person")
    if not words:
        return f"user {attributes.get('id', '?')}"
    if attributes.get("location"):
        words.append(f"from {attributes['location']}")
    return " ".join(words)


def user_sentence(attributes: dict[str, Any]) -> str:
    """The phrase as a sentence: ``A 34-year-old female engineer from Ohio.``"""
    phrase = user_phrase(attributes)
    if phrase.startswith("user "):
        return f"User {phrase[5:]}."
    # "an" before a vowel sound: an engineer, an 18-year-old, an 80-year-old.
    article = "An" if re.match(r"([aeiou]|(8\d?|11|18)-)", phrase, re.IGNORECASE) else "A"
    return f"{article} {phrase}."


def format_features(vector: np.ndarray) -> str:
    """The numeric vector as the LLM sees it, two decimals: ``[0.12, -0.40]``."""
    # Adding 0.0 turns -0.0 into 0.0, so "-0.00" never appears.
    return "[" + ", ".join(f"{float(v) + 0.0:.2f}" for v in np.round(vector, 2)) + "]"


_STATE_PATTERN = re.compile(r"^(?:An? )?(?P<who>.*?)\.?\s*Features=(?P<features>\[[^\]]*\])\s*$")


def _history_state(state: str) -> str:
    """The short user description of a history line, from a ``state_text()`` string.

    ``A 34-year-old female engineer from Ohio. Features=[0.12, -0.40]`` becomes
    ``34-year-old female engineer from Ohio [0.12, -0.40]``: still the whole
    context (a history-learning agent needs the features), without the "=".
    """
    match = _STATE_PATTERN.match(" ".join(state.split()))
    if match is None:
        return " ".join(state.split())
    who = match.group("who")
    if who.startswith("User "):
        who = "user " + who[5:]
    return f"{who} {match.group('features')}"


# ---------------------------------------------------------------------------
# The env
# ---------------------------------------------------------------------------


class ContextualBanditEnv(gym.Env[np.ndarray, np.int64]):
    """Movie recommendation as a contextual bandit.

    Each step a user arrives (observation: the user's latent preference vector,
    float32 of shape ``(rank,)``; in text, a sentence about the user plus the
    vector rounded to two decimals). The agent recommends one of ``n_arms``
    movies (``Discrete(n_arms)``) and receives the user's expected rating of it
    plus ``N(0, noise_std)`` noise. The episode ends after ``horizon`` users;
    the terminal observation repeats the last user (there is no next one).

    ``info`` carries ``legal_actions`` (all ones) on reset and every step, and
    on every step also ``action_label``, ``expected_reward``,
    ``optimal_action``, ``optimal_expected_reward``, ``regret`` (expected,
    >= 0) and ``user`` (the text attributes of the user who was served).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        n_arms: int = 10,
        horizon: int = 50,
        rank: int = 5,
        noise_std: float = 0.5,
        preferences: PreferenceModel | None = None,
        render_mode: str | None = None,
    ) -> None:
        _check_int("n_arms", n_arms, 2, "(a recommender needs two movies to choose from)")
        _check_int("horizon", horizon, 1, "(steps per episode)")
        _check_int("rank", rank, 1, "(latent dimensions)")
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float, np.number)):
            raise ConfigError(f"noise_std must be a number >= 0, got {noise_std!r}")
        if not math.isfinite(noise_std) or noise_std < 0:
            raise ConfigError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(
                f"render_mode {render_mode!r} is not supported: accepted are None and 'ansi'"
            )
        if preferences is None:
            preferences = SyntheticPreferences(rank=rank)
        elif not isinstance(preferences, PreferenceModel):
            raise ConfigError(
                f"preferences={type(preferences).__name__} is not a preference model: accepted "
                "are None, SyntheticPreferences, load_movielens(...) or any PreferenceModel"
            )
        elif preferences.rank != rank:
            raise ConfigError(
                f"rank={rank} disagrees with the rank {preferences.rank} of {preferences.source}: "
                f"pass rank={preferences.rank}"
            )
        if preferences.n_movies < n_arms:
            raise ConfigError(
                f"n_arms={n_arms} needs {n_arms} distinct movies but {preferences.source} "
                f"offers only {preferences.n_movies}: accepted are 2..{preferences.n_movies}"
            )
        self.n_arms = int(n_arms)
        self.horizon = int(horizon)
        self.rank = int(rank)
        self.noise_std = float(noise_std)
        self.preferences = preferences
        self.render_mode = render_mode
        bound = np.float32(preferences.user_bound)
        self.observation_space = spaces.Box(-bound, bound, shape=(self.rank,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.n_arms)
        # Ground truth of the current episode, public for analysers and oracles.
        self.movies: MovieBatch | None = None
        self.users: UserBatch | None = None
        self._labels: list[str] = []
        self._expected: np.ndarray = np.zeros((0, self.n_arms))  # (horizon, n_arms)
        self._noise: np.ndarray = np.zeros((0, self.n_arms))  # (horizon, n_arms)
        self._t = 0  # index of the user to serve next

    # -- Gymnasium API ------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw the episode's movies, all its users and its noise table (in that order)."""
        super().reset(seed=seed)
        rng = self.np_random
        self.movies = self.preferences.sample_movies(self.n_arms, rng)
        self.users = self.preferences.sample_users(self.horizon, rng)
        self._noise = rng.normal(0.0, self.noise_std, size=(self.horizon, self.n_arms))
        self._expected = expected_ratings(self.preferences, self.users.vectors, self.movies.vectors)
        self._labels = _distinct_labels(self.movies.titles)
        self._t = 0
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Serve the current user with movie ``action``; reward is their noisy rating."""
        self._require_episode()
        if self._t >= self.horizon:
            raise ResetNeeded(
                f"step() called after the episode ended at step {self.horizon}; call reset()"
            )
        arm = check_action(action, self.n_arms, "movie indices")
        t = self._t
        expected_row = self._expected[t]
        optimal = int(np.argmax(expected_row))
        expected = float(expected_row[arm])
        optimal_expected = float(expected_row[optimal])
        reward = expected + float(self._noise[t, arm])
        info = self._info()
        info.update(
            {
                INFO_ACTION_LABEL: self._labels[arm],
                "expected_reward": expected,
                "optimal_action": optimal,
                "optimal_expected_reward": optimal_expected,
                "regret": optimal_expected - expected,
                "user": dict(self.users.attributes[t]),
            }
        )
        self._t = t + 1
        terminated = self._t >= self.horizon
        return self._observation(), reward, terminated, False, info

    def render(self) -> str | None:
        """``ansi``: the current user and the movies, as the LLM would read them."""
        if self.render_mode != "ansi":
            return None
        if self.movies is None:
            return "(not reset)"
        return f"{self.state_text()}\nMovies: {', '.join(self._labels)}"

    # -- text protocol ------------------------------------------------------

    def task_instruction(self) -> str:
        """What the agent does, the movies of this episode, and what it maximises."""
        self._require_episode()
        lines = []
        for label, genres in zip(self._labels, self.movies.genres, strict=True):
            lines.append(f"- {label}: {', '.join(genres)}" if genres else f"- {label}")
        movie_list = "\n".join(lines)
        return (
            f"You are a movie recommender. At each of {self.horizon} steps a user arrives; "
            f"you recommend one of these {self.n_arms} movies to them and your reward is "
            f"the user's rating of it (about 1 to 5, with noise).\n"
            f"Movies:\n{movie_list}\n"
            f"Each user is described in words and by a preference vector of {self.rank} "
            "numbers (Features); users with similar features tend to like the same movies. "
            "Maximise the total rating over all users."
        )

    def action_labels(self) -> list[str]:
        """The movie titles of this episode, distinct after lower-casing and stripping."""
        self._require_episode()
        return list(self._labels)

    def legal_actions(self) -> list[int]:
        """Every movie can be recommended at every step."""
        return list(range(self.n_arms))

    def state_text(self) -> str:
        """``A 34-year-old female engineer from Ohio. Features=[0.12, -0.40, ...]``."""
        self._require_episode()
        t = min(self._t, self.horizon - 1)
        sentence = user_sentence(self.users.attributes[t])
        return f"{sentence} Features={format_features(self.users.vectors[t])}"

    def transition_text(self, step: int, state: str, action: int, reward: float) -> str:
        """``Step=3 State=34-year-old ... [0.12, ...] Action=Midnight Harbor Reward=4.12``."""
        self._require_episode()
        return format_transition(step, self._labels[int(action)], reward, _history_state(state))

    # -- helpers ------------------------------------------------------------

    def _observation(self) -> np.ndarray:
        t = min(self._t, self.horizon - 1)
        return self.users.vectors[t].astype(np.float32)  # astype copies: never a shared view

    def _info(self) -> dict[str, Any]:
        return {INFO_LEGAL_ACTIONS: np.ones(self.n_arms, dtype=np.int8)}

    def _require_episode(self) -> None:
        if self.movies is None:
            raise ResetNeeded("call reset() first: the movies and users are drawn at reset")


def _distinct_labels(titles: tuple[str, ...]) -> list[str]:
    """Titles usable as action labels: one line, no "=", distinct after normalisation.

    A repeated title (MovieLens has a few) gets ``#2``, ``#3``... appended.
    """
    labels: list[str] = []
    seen: set[str] = set()
    for index, title in enumerate(titles):
        label = " ".join(str(title).replace("=", "-").split()) or f"movie {index + 1}"
        candidate, copy = label, 1
        while candidate.lower() in seen:
            copy += 1
            candidate = f"{label} #{copy}"
        seen.add(candidate.lower())
        labels.append(candidate)
    return labels


def _check_int(name: str, value: Any, minimum: int, unit: str = "") -> None:
    """ConfigError unless ``value`` is an integer >= ``minimum``."""
    accepted = f"accepted are integers >= {minimum}" + (f" {unit}" if unit else "")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}={value!r} is not an integer: {accepted}")
    if value < minimum:
        raise ConfigError(f"{name}={value} is out of range: {accepted}")


def make_movielens_env(
    ratings_path: str,
    users_path: str | None = None,
    movies_path: str | None = None,
    rank: int = 5,
    min_ratings: int = 20,
    movie_pool: int = 100,
    **env_kwargs: Any,
) -> ContextualBanditEnv:
    """The contextual bandit with users and movies from a MovieLens ratings file.

    Registered as ``agentbench/MovieLensBandit-v0``. ``min_ratings`` and
    ``movie_pool`` go to :func:`agentbench.envs.movielens.load_movielens`; the
    rest (``n_arms``, ``horizon``, ``noise_std``, ``render_mode``) to
    :class:`ContextualBanditEnv`.
    """
    # Imported here: movielens.py imports this module's data classes.
    from agentbench.envs.movielens import load_movielens

    preferences = load_movielens(
        ratings_path,
        users_path=users_path,
        movies_path=movies_path,
        rank=rank,
        min_ratings=min_ratings,
        movie_pool=movie_pool,
    )
    return ContextualBanditEnv(rank=rank, preferences=preferences, **env_kwargs)
