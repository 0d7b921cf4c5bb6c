"""``python -m harness bisect PACKAGE --good V1 --bad V2``: the first release that did it.

The releases between the two come from the package indexes this machine uses (pip's
configuration, plus ``--index-url``/``--find-links``): final releases only unless
``--pre``, yanked ones left out.  A preflight first runs good against bad (an A/B run on
the selected cells, ``ab.py``); when bad is not ``slower`` (or worse on memory or out of
its quality band) the search stops and says so.  Then a binary search: each step is an A/B
run of a middle release against the good one; ``slower`` moves the bad end, ``unchanged``
the good end, ``inconclusive`` is run again with twice the rounds once and otherwise ends
the search with the range it could narrow down to.  Environments are built once per
release and cached (``envs.py``).
"""

from __future__ import annotations

import html.parser
import json
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlparse

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..measure.env import canonical_name
from .ab import ABResult, MetricVerdict
from .envs import EnvError, EnvSpec, Sources


class BisectError(RuntimeError):
    pass


def _version_of(filename: str) -> Version | None:
    name = filename.split("#", 1)[0].rsplit("/", 1)[-1]
    try:
        if name.endswith(".whl"):
            return parse_wheel_filename(name)[1]
        if name.endswith((".tar.gz", ".zip")):
            return parse_sdist_filename(name)[1]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return None


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            found = dict(attrs)
            if found.get("href"):
                self.links.append((found["href"], found))


def _fetch(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        if path.is_dir():
            path = path / "index.html"
        return path.read_text(encoding="utf-8"), "text/html"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - an index URL the user configured
        return response.read().decode("utf-8"), response.headers.get("Content-Type", "")


def releases(package: str, sources: Sources) -> list[Version]:
    """Every version of ``package`` with a file on the indexes or in the find-links folders
    (yanked files left out), oldest first."""
    name = canonical_name(package)
    found: set[Version] = set()
    problems = []
    for index in sources.urls():
        url = index.rstrip("/") + f"/{name}/"
        try:
            body, kind = _fetch(url)
        except (OSError, ValueError) as exc:
            problems.append(f"{url}: {exc}")
            continue
        if "json" in kind:
            for file in json.loads(body).get("files", []):
                version = _version_of(file.get("filename", ""))
                if version is not None and not file.get("yanked"):
                    found.add(version)
            continue
        parser = _Links()
        parser.feed(body)
        for href, attrs in parser.links:
            version = _version_of(urljoin(url, href))
            if version is not None and "data-yanked" not in attrs:
                found.add(version)
    for link in sources.find_links:
        folder = Path(urllib.request.url2pathname(urlparse(link).path)) if link.startswith("file:") else Path(link)
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            try:
                named = (parse_wheel_filename(path.name)[0] if path.name.endswith(".whl")
                         else parse_sdist_filename(path.name)[0])
            except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
                continue
            if canonical_name(named) == name:
                found.add(_version_of(path.name))
    if not found:
        raise BisectError(f"no release of {package!r} found on {sources.urls()} or in {list(sources.find_links)}"
                          + (f" ({'; '.join(problems[:3])})" if problems else ""))
    return sorted(found)


def between(all_versions: Sequence[Version], good: str, bad: str, *, pre: bool = False) -> list[Version]:
    """``good``, the releases after it up to ``bad``, and ``bad``: the search space, in order."""
    try:
        lo, hi = Version(good), Version(bad)
    except InvalidVersion as exc:
        raise BisectError(f"not a version: {exc}") from None
    if lo >= hi:
        raise BisectError(f"--good {good} must be older than --bad {bad}")
    missing = [str(v) for v in (lo, hi) if v not in all_versions]
    if missing:
        raise BisectError(f"{', '.join(missing)} not among the releases found: "
                          f"{', '.join(map(str, all_versions[-12:]))}")
    return [v for v in all_versions if lo <= v <= hi and (pre or not v.is_prerelease or v in (lo, hi))]


@dataclass
class Step:
    version: str
    verdict: str
    lines: list[str]
    folder: str


@dataclass
class BisectResult:
    package: str
    good: str
    bad: str
    steps: list[Step] = field(default_factory=list)
    first_bad: str | None = None
    last_good: str | None = None
    stopped: str | None = None  # why the search ended without an answer

    def render(self) -> str:
        lines = [f"bisect {self.package}: good {self.good}, bad {self.bad}"]
        for step in self.steps:
            lines.append(f"  {self.package} {step.version} against {self.good}: {step.verdict}  ({step.folder})")
            lines += [f"      {line}" for line in step.lines]
        if self.first_bad:
            effect = next((s for s in self.steps if s.version == self.first_bad), None)
            lines.append(f"first bad release: {self.package} {self.first_bad} (last good: {self.last_good})")
            if effect:
                lines += [f"  effect: {line}" for line in effect.lines]
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        return "\n".join(lines)


def bisect(package: str, good: str, bad: str, *, sources: Sources, compare: Callable[[EnvSpec, EnvSpec, int], ABResult],
           rounds: int = 5, pre: bool = False, say: Callable[[str], None] = lambda text: None) -> BisectResult:
    """``compare(good_spec, other_spec, rounds)`` runs one A/B and returns its result.

    The preflight names the symptoms: each (cell, metric) on which ``bad`` is worse than
    ``good`` past its threshold.  A release in between is then *bad* when a symptom's
    interval lies wholly on the worse side of no change, *good* when every symptom's interval
    lies wholly on the better side of the preflight's interval (it is not as bad as
    ``bad``), and otherwise undecided, run again once with twice the rounds."""
    versions = between(releases(package, sources), good, bad, pre=pre)
    say(f"{len(versions)} releases from {good} to {bad}: {', '.join(map(str, versions))}")
    result = BisectResult(package, good, bad)
    spec = lambda v: EnvSpec(f"{package}=={v}", (f"{package}=={v}",))  # noqa: E731
    base = spec(versions[0])
    symptoms: list[MetricVerdict] = []

    def run(index: int, classify: Callable[[ABResult], str]) -> str:
        version = versions[index]
        for attempt, n in enumerate((rounds, 2 * rounds)):
            say(f"A/B: {package} {versions[0]} against {version} ({n} rounds)")
            try:
                ab = compare(base, spec(version), n)
            except EnvError as exc:
                raise BisectError(f"{package} {version}: {exc}") from None
            verdict = classify(ab)
            if verdict != "inconclusive" or attempt == 1:
                lines = [v.line() for v in ab.verdicts] + [f"error: {e}" for e in ab.errors]
                result.steps.append(Step(str(version), verdict, lines, str(ab.folder)))
                if not symptoms:
                    symptoms.extend(v for v in ab.verdicts if v.verdict in WORSE)
                return verdict
        raise AssertionError("unreachable")

    if run(len(versions) - 1, _preflight) != "bad":
        result.stopped = (f"the change does not reproduce: {package} {bad} is not worse than {good} past a threshold "
                          "on the selected cells (see the preflight above); nothing to bisect")
        return result
    lo, hi = 0, len(versions) - 1  # versions[lo] good, versions[hi] bad
    while hi - lo > 1:
        mid = (lo + hi) // 2
        verdict = run(mid, lambda ab: _against(ab, symptoms))
        if verdict == "bad":
            hi = mid
        elif verdict == "good":
            lo = mid
        else:
            result.stopped = (f"{package} {versions[mid]} could not be told apart from either end (twice); "
                              f"the first bad release is after {versions[lo]} and at or before {versions[hi]}")
            break
    if result.stopped is None:
        result.first_bad, result.last_good = str(versions[hi]), str(versions[lo])
    return result


WORSE = ("slower", "more memory", "out of band")


def _preflight(ab: ABResult) -> str:
    return "bad" if any(v.verdict in WORSE for v in ab.verdicts) else "inconclusive" if ab.errors else "good"


def _against(ab: ABResult, symptoms: Sequence[MetricVerdict]) -> str:
    found = {(v.cell_id, v.metric): v for v in ab.verdicts}
    answers = []
    for symptom in symptoms:
        now = found.get((symptom.cell_id, symptom.metric))
        if now is None:
            answers.append("inconclusive")
        elif symptom.ratio is None:  # quality out of its band
            answers.append("bad" if now.verdict == "out of band" else "good")
        elif symptom.verdict == "slower":  # higher is better
            answers.append("bad" if now.ratio.high < 1 else "good" if now.ratio.low > symptom.ratio.high else "inconclusive")
        else:  # more memory
            answers.append("bad" if now.ratio.low > 1 else "good" if now.ratio.high < symptom.ratio.low else "inconclusive")
    if "bad" in answers:
        return "bad"
    return "good" if answers and all(a == "good" for a in answers) else "inconclusive"


__all__ = ["BisectError", "BisectResult", "between", "bisect", "releases"]
