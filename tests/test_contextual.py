"""The contextual bandit (movie recommendation) and its MovieLens loader."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env, data_equivalence
from scipy import stats

import agentbench  # noqa: F401  (registers the env ids)
from agentbench.envs.contextual import (
    ContextualBanditEnv,
    SyntheticPreferences,
    expected_ratings,
    make_movielens_env,
    user_sentence,
)
from agentbench.envs.movielens import load_movielens
from agentbench.envs.protocol import INFO_ACTION_LABEL, INFO_LEGAL_ACTIONS, check_text_env
from agentbench.errors import ConfigError

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def play(env: gym.Env, seed: int, actions: list[int]) -> dict[str, list]:
    """Run one episode with fixed actions and record everything an agent could see."""
    base = env.unwrapped
    obs, info = env.reset(seed=seed)
    record: dict[str, list] = {
        "obs": [obs],
        "rewards": [],
        "infos": [info],
        "text": [base.task_instruction(), *base.action_labels()],
    }
    for step, action in enumerate(actions, start=1):
        state = base.state_text()
        obs, reward, terminated, truncated, info = env.step(action)
        record["obs"].append(obs)
        record["rewards"].append(reward)
        record["infos"].append(info)
        record["text"] += [state, base.transition_text(step, state, action, reward)]
        if terminated or truncated:
            break
    return record


def same_record(a: dict[str, list], b: dict[str, list]) -> bool:
    return all(data_equivalence(a[key], b[key]) for key in ("obs", "rewards", "infos", "text"))


def all_expected(env: ContextualBanditEnv) -> np.ndarray:
    """Expected rating of every (step, arm) of the current episode, from the ground truth."""
    return expected_ratings(env.preferences, env.users.vectors, env.movies.vectors)


# ---------------------------------------------------------------------------
# Gymnasium and text-protocol conformance
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_arms", [5, 10, 20])
def test_registered_envs_pass_gymnasium_and_text_checkers(n_arms: int) -> None:
    env = gym.make(f"agentbench/ContextualBandit-{n_arms}arms-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure too
        check_env(env.unwrapped)
        check_text_env(env, steps=60)  # past the horizon: the episode must end at 50
    assert env.action_space.n == n_arms
    assert env.observation_space.shape == (5,)
    assert env.observation_space.dtype == np.float32


def test_episode_ends_after_horizon_and_reports_every_info_key() -> None:
    env = ContextualBanditEnv(n_arms=5, horizon=7)
    obs, info = env.reset(seed=3)
    assert info[INFO_LEGAL_ACTIONS].dtype == np.int8
    assert info[INFO_LEGAL_ACTIONS].tolist() == [1] * 5
    for t in range(7):
        np.testing.assert_array_equal(obs, env.users.vectors[t].astype(np.float32))
        obs, _, terminated, truncated, info = env.step(t % 5)
        assert terminated == (t == 6) and truncated is False
        assert info[INFO_ACTION_LABEL] == env.action_labels()[t % 5]
        assert info["user"] == env.users.attributes[t]
        for key in ("expected_reward", "optimal_action", "optimal_expected_reward", "regret"):
            assert key in info
    with pytest.raises(ResetNeeded, match="after the episode ended at step 7"):
        env.step(0)


def test_text_before_reset_asks_for_reset() -> None:
    with pytest.raises(ResetNeeded, match="reset"):
        ContextualBanditEnv().action_labels()


# ---------------------------------------------------------------------------
# Seeding and common random numbers
# ---------------------------------------------------------------------------


def test_same_seed_same_episode_and_different_seed_different_episode() -> None:
    actions = np.random.default_rng(0).integers(10, size=50).tolist()
    env = gym.make("agentbench/ContextualBandit-10arms-v0")
    first = play(env, 11, actions)
    again = play(gym.make("agentbench/ContextualBandit-10arms-v0"), 11, actions)
    other = play(env, 12, actions)
    assert len(first["rewards"]) == 50
    assert same_record(first, again)
    assert not same_record(first, other)
    assert first["text"][0] != other["text"][0]  # other movies in the instruction
    assert not np.allclose(first["rewards"], other["rewards"])


def test_common_random_numbers_across_action_sequences() -> None:
    """Users and per-(step, arm) rewards are fixed at reset, whatever the agent does."""
    rng = np.random.default_rng(1)
    a = rng.integers(5, size=50)
    b = np.where(rng.random(50) < 0.5, a, rng.integers(5, size=50))
    env = ContextualBanditEnv(n_arms=5)
    run_a = play(env, 5, a.tolist())
    run_b = play(env, 5, b.tolist())
    same = a == b
    assert 5 < same.sum() < 50  # both cases occur
    for t in range(50):
        np.testing.assert_array_equal(run_a["obs"][t], run_b["obs"][t])
        assert run_a["infos"][t + 1]["user"] == run_b["infos"][t + 1]["user"]
        assert run_a["infos"][t + 1]["optimal_action"] == run_b["infos"][t + 1]["optimal_action"]
    rewards_a, rewards_b = np.array(run_a["rewards"]), np.array(run_b["rewards"])
    np.testing.assert_array_equal(rewards_a[same], rewards_b[same])
    assert np.all(rewards_a[~same] != rewards_b[~same])
    # The noise is drawn per (step, arm): two arms at one step do not share a draw.
    noise_a = rewards_a - [info["expected_reward"] for info in run_a["infos"][1:]]
    noise_b = rewards_b - [info["expected_reward"] for info in run_b["infos"][1:]]
    assert np.all(noise_a[~same] != noise_b[~same])


def test_the_env_never_touches_global_rng() -> None:
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    play(ContextualBanditEnv(n_arms=5), 2, [0] * 50)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


# ---------------------------------------------------------------------------
# Reward model
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("noise_std", [0.5, 2.0])
def test_reward_noise_is_gaussian_with_noise_std(noise_std: float) -> None:
    env = ContextualBanditEnv(n_arms=5, horizon=2000, noise_std=noise_std)
    env.reset(seed=7)
    actions = np.random.default_rng(7).integers(5, size=2000)
    residuals = []
    for action in actions:
        _, reward, _, _, info = env.step(int(action))
        residuals.append(reward - info["expected_reward"])
    residuals = np.array(residuals)
    assert stats.kstest(residuals / noise_std, "norm").pvalue > 0.01
    # Chi-square test of the variance, two-sided.
    n = len(residuals)
    chi2 = (n - 1) * residuals.var(ddof=1) / noise_std**2
    cdf = stats.chi2.cdf(chi2, df=n - 1)
    assert 0.005 < cdf < 0.995
    # ...and the variance test does reject a wrong sigma.
    wrong = (n - 1) * residuals.var(ddof=1) / (1.2 * noise_std) ** 2
    assert stats.chi2.cdf(wrong, df=n - 1) < 0.005


def test_zero_noise_gives_the_expected_rating() -> None:
    env = ContextualBanditEnv(n_arms=5, noise_std=0.0)
    env.reset(seed=0)
    for t in range(50):
        _, reward, _, _, info = env.step(t % 5)
        assert reward == info["expected_reward"]


def test_regret_is_zero_exactly_for_the_optimal_arm_and_the_context_matters() -> None:
    env = ContextualBanditEnv(n_arms=10)
    env.reset(seed=4)
    truth = all_expected(env)
    actions = np.random.default_rng(4).integers(10, size=50)
    optimal_arms = []
    for t, action in enumerate(actions):
        _, _, _, _, info = env.step(int(action))
        assert info["regret"] >= 0
        assert info["optimal_action"] == int(np.argmax(truth[t]))
        assert info["expected_reward"] == pytest.approx(truth[t, action])
        assert info["regret"] == pytest.approx(truth[t].max() - truth[t, action])
        assert (info["regret"] == 0) == (action == info["optimal_action"])
        optimal_arms.append(info["optimal_action"])
    assert (actions == np.array(optimal_arms)).any()  # the regret == 0 branch ran
    # Different users want different movies: no single arm is best for everyone.
    assert len(set(optimal_arms)) >= 4
    assert max(np.bincount(optimal_arms)) < 35


def test_expected_ratings_sit_on_a_rating_scale() -> None:
    env = ContextualBanditEnv(n_arms=20, horizon=50)
    values = []
    for seed in range(20):
        env.reset(seed=seed)
        values.append(all_expected(env).ravel())
    values = np.concatenate(values)
    assert 2.8 < values.mean() < 3.2
    assert 0.6 < values.std() < 1.0
    assert np.mean((values >= 1) & (values <= 5)) > 0.95


def test_a_linear_model_of_the_features_learns_to_recommend() -> None:
    """Per-arm least squares on the observation: the signal LinUCB relies on is there."""
    n_arms, horizon, train = 5, 3000, 2000
    env = ContextualBanditEnv(n_arms=n_arms, horizon=horizon)
    obs, _ = env.reset(seed=21)
    actions = np.random.default_rng(21).integers(n_arms, size=horizon)
    features, rewards = [], []
    for action in actions:
        features.append(obs)
        obs, reward, *_ = env.step(int(action))
        rewards.append(reward)
    design = np.column_stack([np.ones(horizon), np.array(features, dtype=np.float64)])
    rewards = np.array(rewards)
    coefficients = np.zeros((n_arms, 1 + env.rank))
    for arm in range(n_arms):
        rows = actions[:train] == arm
        coefficients[arm] = np.linalg.lstsq(design[:train][rows], rewards[:train][rows])[0]
    # The fit recovers offset and scale * movie vector...
    np.testing.assert_allclose(coefficients[:, 0], env.preferences.offset, atol=0.15)
    np.testing.assert_allclose(
        coefficients[:, 1:], env.preferences.scale * env.movies.vectors, atol=0.15
    )
    # ...and acting greedily on it on unseen users beats random by far.
    truth = all_expected(env)[train:]
    greedy = np.argmax(design[train:] @ coefficients.T, axis=1)
    regret_greedy = np.mean(truth.max(axis=1) - truth[np.arange(len(truth)), greedy])
    regret_random = np.mean(truth.max(axis=1) - truth.mean(axis=1))
    assert regret_greedy < 0.1 * regret_random
    # The best movie depends on the user, so no context-free policy can match it.
    best_fixed_arm = np.mean(truth.max(axis=1) - truth[:, truth.mean(axis=0).argmax()])
    assert regret_greedy < 0.2 * best_fixed_arm


def test_synthetic_attributes_are_mildly_informative() -> None:
    users = SyntheticPreferences(rank=5).sample_users(4000, np.random.default_rng(0))
    ages = np.array([a["age"] for a in users.attributes])
    female = np.array([a["gender"] == "female" for a in users.attributes])
    assert 0.4 < np.corrcoef(ages, users.vectors[:, 0])[0, 1] < 0.8
    assert 0.4 < np.corrcoef(female, users.vectors[:, 1])[0, 1] < 0.8
    assert abs(np.corrcoef(ages, users.vectors[:, 2])[0, 1]) < 0.1
    assert 0.9 < users.vectors.std(axis=0).mean() < 1.1


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------


def test_state_and_transition_text() -> None:
    env = gym.make("agentbench/ContextualBandit-10arms-v0")
    base = env.unwrapped
    obs, _ = env.reset(seed=8)
    labels = base.action_labels()
    assert len({label.strip().lower() for label in labels}) == 10
    assert not any("=" in label or "\n" in label for label in labels)
    instruction = base.task_instruction()
    assert all(f"- {label}: " in instruction for label in labels)
    assert "rating" in instruction
    state = base.state_text()
    number = r"-?\d+\.\d\d"
    pattern = (
        rf"An? \d+-year-old (female|male) [a-z]+ from [A-Za-z ]+\. "
        rf"Features=\[({number}, ){{4}}{number}\]"
    )
    assert re.fullmatch(pattern, state), state
    shown = [float(x) for x in re.findall(number, state.split("Features=")[1])]
    np.testing.assert_allclose(shown, np.round(obs, 2), atol=1e-6)
    _, reward, _, _, info = env.step(3)
    line = base.transition_text(1, state, 3, reward)
    assert line.startswith("Step=1 State=") and f" Action={labels[3]} Reward=" in line
    assert line.count("=") == 4  # the features do not add a fifth "="
    assert state.split(" Features=")[0][2:].strip(" .") in line
    assert info["user"]["occupation"] in state


def test_user_sentences_read_naturally() -> None:
    ohio = {"age": 34, "gender": "female", "occupation": "engineer", "location": "Ohio"}
    assert user_sentence(ohio) == "A 34-year-old female engineer from Ohio."
    assert user_sentence({"age": 18, "gender": "male", "occupation": "student"}).startswith(
        "An 18-year-old"
    )
    assert user_sentence({"age": 81, "gender": "male"}) == "An 81-year-old male person."
    assert user_sentence({"id": 17}) == "User 17."
    assert "healthcare worker" in user_sentence({"age": 40, "occupation": "healthcare"})


# ---------------------------------------------------------------------------
# MovieLens
# ---------------------------------------------------------------------------

N_USERS, N_MOVIES, TRUE_RANK = 40, 30, 3
OCCUPATIONS = ["engineer", "artist", "healthcare", "student", "other"]
GENRE_FLAGS = 19


def _truth(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A known low-rank rating model, integer ratings and which pairs are observed."""
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((N_USERS, TRUE_RANK)) * 0.6
    movies = rng.standard_normal((N_MOVIES, TRUE_RANK)) * 0.6
    truth = 3.2 + users @ movies.T
    ratings = np.clip(np.rint(truth + rng.normal(0, 0.3, truth.shape)), 1, 5).astype(int)
    observed = rng.random(truth.shape) < 0.75
    return truth, ratings, observed


def _title(movie: int) -> str:
    if movie == 1:
        return "Amélie (2001)"  # latin-1 in u.item
    if movie in (2, 3):
        return "Chasing Amy (1997)"  # ml-100k really lists this title twice
    return f"Film {movie}, The (19{50 + movie})"


@pytest.fixture
def ml100k(tmp_path: Path) -> dict[str, Path]:
    _, ratings, observed = _truth()
    lines = [
        f"{u + 1}\t{m + 1}\t{ratings[u, m]}\t88125{u}{m}"
        for u in range(N_USERS)
        for m in range(N_MOVIES)
        if observed[u, m]
    ]
    order = np.random.default_rng(1).permutation(len(lines))  # files are not sorted
    (tmp_path / "u.data").write_text("\n".join(lines[i] for i in order) + "\n")
    users = [
        f"{u + 1}|{20 + u}|{'MF'[u % 2]}|{OCCUPATIONS[u % 5]}|{10000 + 37 * u}"
        for u in range(N_USERS)
    ]
    (tmp_path / "u.user").write_text("\n".join(users) + "\n")
    items = []
    for m in range(1, N_MOVIES + 1):
        flags = ["0"] * GENRE_FLAGS
        flags[8 if m % 2 else 5] = "1"  # Drama or Comedy
        items.append(f"{m}|{_title(m)}|01-Jan-1995||http://x|" + "|".join(flags))
    (tmp_path / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    return {
        "ratings_path": tmp_path / "u.data",
        "users_path": tmp_path / "u.user",
        "movies_path": tmp_path / "u.item",
    }


@pytest.fixture
def mllatest(tmp_path: Path) -> dict[str, Path]:
    _, ratings, observed = _truth()
    rows = ["userId,movieId,rating,timestamp"] + [
        f"{u + 1},{m + 1},{float(ratings[u, m])},964982703"
        for u in range(N_USERS)
        for m in range(N_MOVIES)
        if observed[u, m]
    ]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    movies = ["movieId,title,genres"] + [
        f'{m},"{_title(m)}",Adventure|Comedy' for m in range(1, N_MOVIES + 1)
    ]
    (tmp_path / "movies.csv").write_text("\n".join(movies) + "\n", encoding="utf-8")
    return {"ratings_path": tmp_path / "ratings.csv", "movies_path": tmp_path / "movies.csv"}


def test_movielens_svd_recovers_the_true_ratings(ml100k: dict[str, Path]) -> None:
    truth, _, _ = _truth()
    model = load_movielens(ml100k["ratings_path"], rank=TRUE_RANK, min_ratings=5)
    assert model.user_vectors.shape == (N_USERS, TRUE_RANK)
    assert model.movie_vectors.shape == (N_MOVIES, TRUE_RANK)
    true_fit = truth[np.ix_(model.user_ids - 1, model.movie_ids - 1)]
    fitted = model.fitted_ratings()
    assert np.corrcoef(fitted.ravel(), true_fit.ravel())[0, 1] > 0.9
    # SVD-impute beats the plain SVD of the zero-filled matrix, which shrinks to the mean.
    plain = load_movielens(ml100k["ratings_path"], rank=TRUE_RANK, min_ratings=5, impute_iters=0)
    assert np.mean((fitted - true_fit) ** 2) < np.mean((plain.fitted_ratings() - true_fit) ** 2)
    # U sqrt(S) / V sqrt(S): user and movie vectors carry the same scale per component.
    np.testing.assert_allclose(
        np.linalg.norm(model.user_vectors, axis=0), np.linalg.norm(model.movie_vectors, axis=0)
    )
    # Loading is deterministic.
    again = load_movielens(ml100k["ratings_path"], rank=TRUE_RANK, min_ratings=5)
    np.testing.assert_array_equal(model.user_vectors, again.user_vectors)


def test_movielens_env_uses_the_files(ml100k: dict[str, Path]) -> None:
    kwargs = {key: str(value) for key, value in ml100k.items()}
    env = gym.make(
        "agentbench/MovieLensBandit-v0", rank=TRUE_RANK, min_ratings=5, n_arms=5, **kwargs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
        check_text_env(env)
    assert env.observation_space.shape == (TRUE_RANK,)
    base = env.unwrapped
    obs, _ = env.reset(seed=0)
    titles = {_title(m) for m in range(1, N_MOVIES + 1)}
    assert set(base.action_labels()) <= titles | {"Chasing Amy (1997) #2"}
    assert "Drama" in base.task_instruction() or "Comedy" in base.task_instruction()
    state = base.state_text()
    assert re.match(r"An? \d+-year-old (male|female) .+ from zip code \d+\. Features=", state)
    _, _, _, _, info = env.step(0)
    user = info["user"]
    assert user["age"] == 20 + user["id"] - 1
    assert user["occupation"] == OCCUPATIONS[(user["id"] - 1) % 5]
    assert user["location"] == f"zip code {10000 + 37 * (user['id'] - 1)}"
    row = int(np.flatnonzero(base.preferences.user_ids == user["id"])[0])
    np.testing.assert_array_equal(obs, base.preferences.user_vectors[row].astype(np.float32))
    # The expected reward is the SVD model's rating of this (user, movie).
    movie = base.movies.titles[0]
    column = base.preferences.movie_titles.index(movie)
    fitted = base.preferences.fitted_ratings()[row, column]
    assert info["expected_reward"] == pytest.approx(fitted)


def test_movielens_latin1_titles_and_duplicate_titles(ml100k: dict[str, Path]) -> None:
    env = make_movielens_env(
        str(ml100k["ratings_path"]),
        movies_path=str(ml100k["movies_path"]),
        rank=TRUE_RANK,
        min_ratings=5,
        movie_pool=N_MOVIES,
        n_arms=N_MOVIES,  # every movie in the episode
    )
    env.reset(seed=0)
    labels = env.action_labels()
    assert "Amélie (2001)" in labels
    assert {"Chasing Amy (1997)", "Chasing Amy (1997) #2"} <= set(labels)
    assert len({label.lower() for label in labels}) == N_MOVIES
    check_text_env(env)


def test_movielens_csv_format_matches_u_data(
    ml100k: dict[str, Path], mllatest: dict[str, Path]
) -> None:
    from_csv = load_movielens(
        mllatest["ratings_path"], movies_path=mllatest["movies_path"], rank=3, min_ratings=5
    )
    from_udata = load_movielens(ml100k["ratings_path"], rank=3, min_ratings=5)
    np.testing.assert_allclose(from_csv.fitted_ratings(), from_udata.fitted_ratings(), atol=1e-8)
    assert from_csv.movie_titles[3] == "Film 4, The (1954)"  # a quoted title with a comma
    assert from_csv.movie_genres[0] == ("Adventure", "Comedy")
    env = make_movielens_env(str(mllatest["ratings_path"]), rank=3, min_ratings=5, n_arms=5)
    env.reset(seed=1)
    assert re.fullmatch(r"User \d+\. Features=\[.*\]", env.state_text())
    assert all(re.fullmatch(r"movie \d+", label) for label in env.action_labels())
    line = env.transition_text(1, env.state_text(), 0, 3.5)
    assert re.fullmatch(r"Step=1 State=user \d+ \[.*\] Action=movie \d+ Reward=3.50", line)


def test_movielens_movies_come_from_the_most_rated(ml100k: dict[str, Path]) -> None:
    model = load_movielens(ml100k["ratings_path"], rank=3, min_ratings=5, movie_pool=8)
    counts = model.movie_counts
    assert model.n_movies == 8
    assert counts[model.pool].min() >= np.sort(counts)[-8]
    drawn = set()
    rng = np.random.default_rng(0)
    for _ in range(20):
        drawn |= set(model.sample_movies(5, rng).titles)
    assert drawn == {model.movie_titles[i] for i in model.pool}


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_missing_directory_and_empty_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "u.data"
    with pytest.raises(ConfigError, match=r"ratings file '.*nope/u\.data' does not exist"):
        load_movielens(missing)
    with pytest.raises(ConfigError, match="is not a file"):
        load_movielens(tmp_path)
    (tmp_path / "empty.data").write_text("\n\n")
    with pytest.raises(ConfigError, match=r"'.*empty\.data' is empty"):
        load_movielens(tmp_path / "empty.data")
    (tmp_path / "header.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(ConfigError, match="has a header but no ratings"):
        load_movielens(tmp_path / "header.csv")
    (tmp_path / "u.data").write_text("1\t1\t5\t0\n")
    with pytest.raises(ConfigError, match=r"users file '.*absent\.user' does not exist"):
        load_movielens(tmp_path / "u.data", users_path=tmp_path / "absent.user", min_ratings=1)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1\t1\t5\t0\n1\t2\t4\t0\n1\t3\t4\n", r"line 3 of ratings file .* has 3 columns where 4"),
        ("1\t1\t5\t0\n1\t2\tfour\t0\n", r"line 2 of ratings file .* has rating 'four'"),
        ("1\t1\tnan\t0\n", r"line 1 .* has rating 'nan'"),
        ("1\tx\t5\t0\n", r"line 1 .* has movie id 'x'"),
        ("1\t1\t5\t0\n2\t1\t4\t0\n1\t1\t3\t0\n", r"line 3 .* second time \(first on line 1\)"),
        ("userId,movieId,rating,timestamp\n1,1,4.5,0\n2,1,4\n", r"line 3 .* has 3 columns"),
        ("1,1,5,0\n", r"line 1 .* neither accepted format: ml-100k u\.data"),
        ("userId;movieId;rating\n", r"line 1 .* header 'userId;movieId;rating'"),
    ],
)
def test_malformed_ratings_name_the_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "ratings"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_movielens(path, rank=1, min_ratings=1)


def test_malformed_users_and_movies_files(ml100k: dict[str, Path], tmp_path: Path) -> None:
    bad_users = tmp_path / "bad.user"
    bad_users.write_text("1|24|M|technician|85711\n2|53|F|other\n")
    with pytest.raises(ConfigError, match=r"line 2 of users file .* 4 '\|'-separated columns"):
        load_movielens(ml100k["ratings_path"], users_path=bad_users, min_ratings=5)
    bad_movies = tmp_path / "bad.item"
    bad_movies.write_text("1|Toy Story (1995)|\nseven|Se7en (1995)|\n")
    with pytest.raises(ConfigError, match=r"line 2 of movies file .* movie id 'seven'"):
        load_movielens(ml100k["ratings_path"], movies_path=bad_movies, min_ratings=5)


def test_too_few_movies_and_too_large_rank(ml100k: dict[str, Path]) -> None:
    path = str(ml100k["ratings_path"])
    with pytest.raises(ConfigError, match=r"n_arms=10 needs 10 distinct movies .* only 8"):
        make_movielens_env(path, rank=3, min_ratings=5, movie_pool=8, n_arms=10)
    with pytest.raises(ConfigError, match=r"rank=30 is too large .* 40 users x 30 movies"):
        load_movielens(path, rank=30, min_ratings=5)
    with pytest.raises(ConfigError, match=r"min_ratings=1000"):
        load_movielens(path, min_ratings=1000)
    with pytest.raises(ConfigError, match=r"rank=0 is out of range"):
        load_movielens(path, rank=0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"n_arms": 0}, r"n_arms=0 is out of range: accepted are integers >= 2"),
        ({"n_arms": 1}, r"n_arms=1 is out of range: accepted are integers >= 2"),
        ({"n_arms": 401}, r"n_arms=401 needs 401 distinct movies .* 2\.\.400"),
        ({"n_arms": 2.5}, r"n_arms=2\.5 is not an integer"),
        ({"horizon": 0}, r"horizon=0 is out of range: accepted are integers >= 1"),
        ({"rank": 0}, r"rank=0 is out of range"),
        ({"noise_std": -0.1}, r"noise_std must be a finite number >= 0, got -0\.1"),
        ({"render_mode": "human"}, r"render_mode 'human' is not supported"),
        ({"preferences": SyntheticPreferences(rank=3)}, r"rank=5 disagrees with the rank 3"),
        ({"preferences": "movielens"}, r"preferences=str is not a preference model"),
    ],
)
def test_bad_env_arguments(kwargs: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        ContextualBanditEnv(**kwargs)


def test_bad_env_arguments_through_gymnasium_make() -> None:
    with pytest.raises(ConfigError, match="n_arms=1"):
        gym.make("agentbench/ContextualBandit-v0", n_arms=1)


@pytest.mark.parametrize("action", [5, -1, 2.0, "2", np.array([1, 2]), True])
def test_bad_action(action: object) -> None:
    env = ContextualBanditEnv(n_arms=5)
    env.reset(seed=0)
    with pytest.raises(
        ConfigError,
        match=r"action .* is outside the action space: accepted are .* 0\.\.4 \(movie indices\)",
    ):
        env.step(action)


def test_numpy_integer_actions_are_accepted() -> None:
    env = ContextualBanditEnv(n_arms=5)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.int64(4))
    assert info[INFO_ACTION_LABEL] == env.action_labels()[4]


def test_a_suite_plays_a_users_movielens_file(ml100k: dict[str, Path], tmp_path: Path) -> None:
    from agentbench.cli import main
    from agentbench.records import read_episodes

    suite = tmp_path / "movielens.toml"
    suite.write_text(
        'name = "movielens"\nepisodes = 2\nnum_envs = 2\nagents = ["linucb", "random"]\n'
        "[[envs]]\n"
        'id = "agentbench/MovieLensBandit-v0"\n'
        f'kwargs = {{ ratings_path = "{ml100k["ratings_path"]}", rank = {TRUE_RANK}, '
        "min_ratings = 5, n_arms = 5, horizon = 6 }\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 0
    episodes = read_episodes(out / "episodes.jsonl")
    assert sorted({ep.agent for ep in episodes}) == ["linucb", "random"]
    assert all(len(ep.steps) == 6 and ep.n_actions == 5 for ep in episodes)
    assert all(ep.env_kwargs["ratings_path"] == str(ml100k["ratings_path"]) for ep in episodes)
