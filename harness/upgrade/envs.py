"""The environment of one side of an A/B run, built once from a spec and cached.

A SPEC is an existing interpreter (``/opt/venv/bin/python``; ``current`` for this one),
a requirements file (``-r reqs.txt`` or a path ending in ``.txt``), or requirements
(``"transformers==4.46.3"``, several separated by spaces or commas).

A built environment is an *overlay* on the current one: a virtualenv holding only the
packages whose version the spec changes, in front of the current environment's
site-packages (added by a ``.pth`` file).  Everything the spec does not name is the
current environment's own install, byte for byte: torch stays the same unless named, and
the project is the checkout being tested.  Which packages change is decided by uv's
resolver over the spec's requirements, preferring every current version (the current
pins are its preferences), so a dependency moves only when the spec forces it (transformers
4.46 needs an older tokenizers and huggingface_hub); the environment record lists each.
uv ignores pip's configuration, so the machine's indexes, find-links and constraints (``pip
config list`` and ``PIP_*``) are passed to it.  Environments are cached under
``$HARNESS_ENV_CACHE`` (default ``~/.cache/trainer-bench/envs``) by the hash of the spec,
the current environment's package list, the Python version and the package sources.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from ..measure.env import canonical_name

CACHE_ENV = "HARNESS_ENV_CACHE"


class EnvError(RuntimeError):
    """A spec that cannot be read, or an environment that cannot be built.  Says why."""


@dataclass(frozen=True)
class EnvSpec:
    text: str
    requirements: tuple[str, ...] = ()
    python: str | None = None  # an existing interpreter, used as it is

    @property
    def label(self) -> str:
        return self.text if len(self.text) <= 60 else self.text[:57] + "..."

    def named(self) -> set[str]:
        return {canonical_name(Requirement(r).name) for r in self.requirements}


def parse_spec(text: str) -> EnvSpec:
    text = text.strip()
    if not text:
        raise EnvError("an empty spec: give requirements (\"transformers==4.46.3\"), -r FILE, an interpreter, or current")
    if text == "current":
        return EnvSpec(text, python=sys.executable)
    path = Path(text.removeprefix("-r").strip()).expanduser()
    if text.startswith("-r") or (text.endswith(".txt") and path.is_file()):
        if not path.is_file():
            raise EnvError(f"spec {text!r}: no requirements file {path}")
        lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return EnvSpec(text, _requirements([line for line in lines if line], text))
    if path.is_file() and os.access(path, os.X_OK) and path.name.startswith("python"):
        return EnvSpec(text, python=str(path))
    return EnvSpec(text, _requirements([p for p in re.split(r"[\s,]+", text) if p], text))


def _requirements(items: Sequence[str], text: str) -> tuple[str, ...]:
    out = []
    for item in items:
        if item.startswith("-"):
            raise EnvError(f"spec {text!r}: {item!r}: only requirements are allowed here (options go to the command)")
        try:
            req = Requirement(item)
        except InvalidRequirement as exc:
            raise EnvError(f"spec {text!r}: {item!r} is not a requirement ({exc}); "
                           "write it as pip does, e.g. transformers==4.46.3") from None
        out.append(str(req))
    return tuple(sorted(out))


# ---------------------------------------------------------------- where packages come from


@dataclass(frozen=True)
class Sources:
    """Indexes, find-links and constraints, as pip on this machine sees them, plus extras."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()

    def uv_args(self) -> list[str]:
        args: list[str] = ["--index-strategy", "unsafe-best-match"]  # pip's behaviour over several indexes
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for path in self.constraints:
            args += ["--constraint", path]
        return args

    def with_extra(self, *, index_url: str | None = None, extra_index_urls: Sequence[str] = (),
                   find_links: Sequence[str] = ()) -> Sources:
        return Sources(index_url or self.index_url, (*self.extra_index_urls, *extra_index_urls),
                       (*self.find_links, *find_links), self.constraints)

    def urls(self) -> list[str]:
        return [u for u in (self.index_url or "https://pypi.org/simple", *self.extra_index_urls) if u]


def pip_sources() -> Sources:
    """What ``pip config list`` and the ``PIP_*`` variables say about package sources."""
    values: dict[str, str] = {}
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    for line in listed.splitlines():
        match = re.match(r"^[^.]*\.([\w-]+)='(.*)'$", line.strip())
        if match:
            values.setdefault(match.group(1), match.group(2))  # the first (most specific) wins
    for key in ("index-url", "extra-index-url", "find-links", "constraint"):
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            values[key] = env
    split = lambda key: tuple(v for v in re.split(r"\s+", values.get(key, "")) if v)  # noqa: E731
    return Sources(values.get("index-url"), split("extra-index-url"), split("find-links"), split("constraint"))


# ---------------------------------------------------------------- building


def uv_bin() -> str:
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvError("uv is not installed: pip install uv (it builds the environments of an A/B run)")


def current_packages() -> dict[str, str]:
    from ..measure.env import installed_packages

    return installed_packages()


_TOOLS = {"pip", "uv", "setuptools", "wheel"}


def local_packages() -> set[str]:
    """Installed from a folder or a local file (PEP 610 ``direct_url.json``): no index has
    them, so they are shared as they are, never resolved again."""
    import importlib.metadata

    out = set()
    for dist in importlib.metadata.distributions():
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "null")
        except (ValueError, OSError):
            direct = None
        if direct and (direct.get("dir_info") is not None or str(direct.get("url", "")).startswith("file:")):
            out.add(canonical_name(dist.metadata["Name"]))
    return out


def site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "trainer-bench" / "envs")


@dataclass
class BuiltEnv:
    spec: EnvSpec
    python: str
    changed: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # package: (current, overlay)
    cached: bool = False

    def describe(self) -> str:
        if self.spec.python:
            return f"{self.spec.label}: the interpreter {self.python}"
        moved = ", ".join(f"{k} {a or '(none)'} -> {b}" for k, a, b in ((k, *v) for k, v in sorted(self.changed.items())))
        return f"{self.spec.label}: {moved or 'the current environment (nothing to change)'}"


def build(spec: EnvSpec, sources: Sources | None = None, *, cache: Path | None = None,
          say=lambda text: None) -> BuiltEnv:
    """The interpreter of ``spec``'s environment, built (or found in the cache)."""
    if spec.python:
        if not Path(spec.python).is_file():
            raise EnvError(f"spec {spec.text!r}: no interpreter at {spec.python}")
        return BuiltEnv(spec, spec.python)
    sources = sources or pip_sources()
    current = current_packages()
    key = hashlib.sha256(json.dumps({
        "requirements": spec.requirements, "current": current, "python": sys.version, "sources": sources.uv_args(),
        "site": site_dirs(),
    }, sort_keys=True).encode()).hexdigest()[:16]
    root = cache or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs building the same spec: one builds, one waits
        done = folder / "harness-env.json"
        if done.is_file():
            record = json.loads(done.read_text())
            return BuiltEnv(spec, record["python"], {k: tuple(v) for k, v in record["changed"].items()}, cached=True)
        shutil.rmtree(folder, ignore_errors=True)
        say(f"building the environment of {spec.label} in {folder}")
        changed = _build(spec, sources, current, folder)
        python = str(folder / "bin" / "python")
        done.write_text(json.dumps({"spec": spec.text, "requirements": spec.requirements, "python": python,
                                    "changed": changed}, indent=2))
        return BuiltEnv(spec, python, changed)


def _build(spec: EnvSpec, sources: Sources, current: dict[str, str], folder: Path) -> dict[str, tuple[str | None, str]]:
    uv = uv_bin()
    _run([uv, "venv", str(folder), "--python", sys.executable, "--quiet"], "create the virtualenv")
    # The whole current environment is resolved again with the spec's requirements in force,
    # so that what the spec moves (huggingface_hub under an older transformers) moves
    # whatever depends on it too (accelerate, datasets), as pip would have.  Packages not
    # from an index (the project's own editable install, local wheels) and torch stay pinned.
    named = spec.named()
    local = local_packages()
    keep = [f"{name}=={version}" for name, version in current.items() if name == "torch" and name not in named]
    others = [name for name in current if name not in named and name not in local and name != "torch"
              and name not in _TOOLS]
    wanted = folder / "requirements.in"
    wanted.write_text("\n".join([*spec.requirements, *keep, *others]) + "\n")
    resolved = folder / "requirements.txt"
    # The current pins are the resolver's preferences: it keeps each unless the spec forces it.
    resolved.write_text("".join(f"{name}=={version}\n" for name, version in current.items()))
    _run([uv, "pip", "compile", str(wanted), "-o", str(resolved), "--python", sys.executable, "--no-header",
          "--no-annotate", "--quiet", *sources.uv_args()], f"resolve {spec.text!r}")
    pins = {}
    for line in resolved.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical_name(name.split("[")[0])] = version.split(";")[0].strip()
    changed = {name: (current.get(name), version) for name, version in pins.items()
               if current.get(name) != version and name not in local}
    python = folder / "bin" / "python"
    if changed:
        _run([uv, "pip", "install", "--python", str(python), "--no-deps", "--quiet", *sources.uv_args(),
              *(f"{name}=={version}" for name, (_, version) in sorted(changed.items()))], f"install {spec.text!r}")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # After the overlay's own packages: the current environment, with its .pth files (the
    # project's editable install among them).
    Path(site, "zz_harness_base.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in site_dirs()) + "\n")
    return changed


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise EnvError(f"could not {what}: " + " | ".join(detail[-8:]))
