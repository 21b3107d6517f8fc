"""Which versions of a task are served, and the labels that name them (TF Serving's
`model_version_policy` and `version_labels`), from the `models.versions` / `models.labels`
settings:

    models:
      versions:                    # per task; a task not named serves its newest version
        translate: {latest: 2}     # the two newest complete versions
        classify: {specific: [1, 3]}
      labels:                      # per task: a name requests may use instead of a number
        translate: {stable: 3, canary: 4}

A request that names neither a version nor a label gets the newest version served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from serving.server.errors import TASKS

LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class VersionPolicy:
    """`latest` N newest complete versions, or the `specific` ones listed."""

    latest: int | None = 1
    specific: tuple[int, ...] | None = None

    def wanted(self, available: list[int]) -> list[int]:
        """The versions to serve among those on disk (ascending), newest first."""
        if self.specific is not None:
            return sorted((v for v in available if v in self.specific), reverse=True)
        return sorted(available, reverse=True)[: self.latest]

    def describe(self) -> str:
        if self.specific is not None:
            return f"specific: {list(self.specific)}"
        return f"latest: {self.latest}"


def parse_policies(raw) -> dict[str, VersionPolicy]:
    """`models.versions` → {task: VersionPolicy} for every task (default: latest 1)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"models.versions must be a mapping of task: policy, got {raw!r}")
    policies = {task: VersionPolicy() for task in TASKS}
    for task, policy in raw.items():
        where = f"models.versions.{task}"
        if task not in TASKS:
            raise ValueError(f"{where}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        if not isinstance(policy, dict) or len(policy) != 1:
            raise ValueError(
                f"{where} must be {{latest: N}} or {{specific: [versions]}}, got {policy!r}"
            )
        ((kind, value),) = policy.items()
        if kind == "latest":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}.latest must be an integer ≥ 1, got {value!r}")
            policies[task] = VersionPolicy(latest=value)
        elif kind == "specific":
            if (
                not isinstance(value, list)
                or not value
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)
            ):
                raise ValueError(
                    f"{where}.specific must be a non-empty list of version numbers, got {value!r}"
                )
            policies[task] = VersionPolicy(latest=None, specific=tuple(sorted(set(value))))
        else:
            raise ValueError(f"{where}: expected latest or specific, got {kind!r}")
    return policies


def parse_labels(raw, policies: dict[str, VersionPolicy]) -> dict[str, dict[str, int]]:
    """`models.labels` → {task: {label: version}}; a label of a `specific` policy must name one
    of its versions (for `latest: N` the check needs the versions on disk: `check_labels`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(
            f"models.labels must be a mapping of task: {{label: version}}, got {raw!r}"
        )
    labels: dict[str, dict[str, int]] = {task: {} for task in TASKS}
    for task, names in raw.items():
        where = f"models.labels.{task}"
        if task not in TASKS:
            raise ValueError(f"{where}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        if not isinstance(names, dict):
            raise ValueError(f"{where} must be a mapping of label: version, got {names!r}")
        for name, version in names.items():
            if not isinstance(name, str) or not LABEL.match(name):
                raise ValueError(
                    f"{where}: a label is a lower-case word (a-z, 0-9, _ or -, up to 32, "
                    f"starting with a letter), got {name!r}"
                )
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise ValueError(f"{where}.{name} must be a version number, got {version!r}")
            policy = policies[task]
            if policy.specific is not None and version not in policy.specific:
                raise ValueError(
                    f"{where}.{name} points at version {version}, which models.versions."
                    f"{task} ({policy.describe()}) does not serve"
                )
            labels[task][name] = version
    return labels


def check_labels(labels: dict[str, dict[str, int]], served: dict[str, list[int]], policies) -> None:
    """ValueError naming the first label whose version is not among those `served` per task."""
    for task, names in labels.items():
        for name, version in sorted(names.items()):
            if version not in served.get(task, []):
                have = ", ".join(map(str, sorted(served.get(task, [])))) or "none"
                raise ValueError(
                    f"models.labels.{task}.{name} points at version {version}, which is not "
                    f"served (models.versions.{task}: {policies[task].describe()}; served: "
                    f"{have}): export it, or point the label at a served version"
                )
