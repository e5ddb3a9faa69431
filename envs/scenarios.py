"""Verbal scenarios for the multi-armed bandits: the same arms, told as a real choice.

The paper's bandit is a room of coloured buttons; BanditBench (Nie et al. 2024)
also tells bandits as choosing online ads, videos or clothes, with up to 100
action names and a base or a detailed description. These are our own texts. A
scenario is an env setting (``labels="ads"``, ``description="detailed"``), not a
registered id: suites and training configs give it as env kwargs.

Each scenario names up to 100 actions, every pair of two lists of 10 words, so the
names are distinct, readable and the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """How a bandit is told: what the actions are, and what choosing one means."""

    setting: str  # "{n}" actions and "{labels}"; ends with a full stop
    thing: str  # one action, as a noun
    act: str  # choosing one, as a verb
    gaussian_reward: str  # what a Gaussian reward is in the story
    bernoulli_reward: str  # what a 0/1 reward is in the story
    first: tuple[str, ...]  # 10 words
    second: tuple[str, ...]  # 10 words

    @property
    def names(self) -> list[str]:
        """100 distinct names; neighbours differ in both words (pair i is first[i % 10] with
        second[(i + i // 10) % 10]), so the first few arms do not all share a word."""
        return [
            f"{self.first[i % 10]} {self.second[(i + i // 10) % 10]}"
            for i in range(len(self.first) * len(self.second))
        ]


SCENARIOS: dict[str, Scenario] = {
    "ads": Scenario(
        setting="You run a website and choose which of {n} online ads to show: {labels}.",
        thing="ad",
        act="show",
        gaussian_reward="a revenue score",
        bernoulli_reward="1 for a click, else 0",
        first=(
            "Sunny",
            "Swift",
            "Golden",
            "Urban",
            "Fresh",
            "Bright",
            "Cozy",
            "Bold",
            "Calm",
            "Lucky",
        ),
        second=(
            "Coffee",
            "Sneakers",
            "Travel",
            "Phones",
            "Books",
            "Garden",
            "Pizza",
            "Bikes",
            "Yoga",
            "Insurance",
        ),
    ),  # fmt: skip
    "videos": Scenario(
        setting="You recommend one of {n} videos to a viewer each time: {labels}.",
        thing="video",
        act="recommend",
        gaussian_reward="a watch-time score",
        bernoulli_reward="1 if the viewer watched it to the end, else 0",
        first=(
            "Cooking",
            "Travel",
            "Science",
            "History",
            "Music",
            "Comedy",
            "Gaming",
            "Nature",
            "Sports",
            "Art",
        ),
        second=(
            "Basics",
            "Vlog",
            "Documentary",
            "Tutorial",
            "Live",
            "Shorts",
            "Review",
            "Interview",
            "Challenge",
            "Podcast",
        ),
    ),  # fmt: skip
    "clothes": Scenario(
        setting="You run a clothes shop and suggest one of {n} items to each customer: {labels}.",
        thing="item",
        act="suggest",
        gaussian_reward="a satisfaction score",
        bernoulli_reward="1 for a purchase, else 0",
        first=(
            "red",
            "blue",
            "black",
            "white",
            "green",
            "grey",
            "navy",
            "beige",
            "striped",
            "checked",
        ),
        second=(
            "scarf",
            "jacket",
            "shirt",
            "dress",
            "jeans",
            "hat",
            "sweater",
            "skirt",
            "coat",
            "boots",
        ),
    ),  # fmt: skip
}
DESCRIPTIONS = ("base", "detailed")
MAX_SCENARIO_ARMS = 100
