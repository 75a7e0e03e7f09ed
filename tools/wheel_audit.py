#!/usr/bin/env python3
"""Which of edge-daemon's runtime dependencies a Raspberry Pi can install, and how.

For every runtime dependency (pyproject.toml's ``dependencies`` and every
extra but the development ones, plus what they pull in when they run, and the
packages about to be added, PLANNED below) and for each of aarch64 (64-bit
Raspberry Pi OS) and armv7l (32-bit, which Pi Zero 2 W and Pi 3 owners often
run), on CPython 3.11 (Debian 12 / Raspberry Pi OS Bookworm), it reports:

- PyPI: the newest allowed version with a wheel pip would take, or that there
  is only source (pip builds it on the Pi: a compiler and headers needed);
- Debian 12 (bookworm, bookworm-updates, bookworm-security): the python3-
  package for arm64 and armhf, from the archive's Packages index;
- the Raspberry Pi OS archive and piwheels, when this machine reaches them;
  where it does not, what the packages' own documentation says (NOTES).

    .venv/bin/python tools/wheel_audit.py             # a text table
    .venv/bin/python tools/wheel_audit.py --markdown  # the README's table
    .venv/bin/python tools/wheel_audit.py --json

Answers are cached for a day in ~/.cache/edge-daemon/wheel-audit (--refresh
ignores the cache). Exit status: 0 when every source answered, 2 when some
could not be reached (the report says which, and those cells read "?"), 1 when
pyproject.toml cannot be read or a library is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import json
import lzma
import os
import re
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from packaging.markers import InvalidMarker
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.tags import Tag, compatible_tags, cpython_tags
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip carries a copy
    try:
        from pip._vendor.packaging.markers import InvalidMarker  # type: ignore[no-redef]
        from pip._vendor.packaging.requirements import (  # type: ignore[no-redef]
            InvalidRequirement,
            Requirement,
        )
        from pip._vendor.packaging.specifiers import (  # type: ignore[no-redef]
            InvalidSpecifier,
            SpecifierSet,
        )
        from pip._vendor.packaging.tags import (  # type: ignore[no-redef]
            Tag,
            compatible_tags,
            cpython_tags,
        )
        from pip._vendor.packaging.utils import (  # type: ignore[no-redef]
            InvalidWheelFilename,
            canonicalize_name,
            parse_wheel_filename,
        )
        from pip._vendor.packaging.version import (  # type: ignore[no-redef]
            InvalidVersion,
            Version,
        )
    except ImportError:
        sys.exit(
            "wheel_audit: needs the 'packaging' library: run it with the project's venv "
            "(.venv/bin/python tools/wheel_audit.py)"
        )

ROOT = Path(__file__).resolve().parent.parent

PYTHON = "3.11.2"  # Debian 12 and Raspberry Pi OS Bookworm
GLIBC_MINOR = 36  # glibc 2.36: manylinux_2_36 and older wheels run
ARCHES = {"aarch64": "arm64", "armv7l": "armhf"}  # pip's machine name: Debian's

# Extras that are not run time: test and benchmark tools.
NOT_RUNTIME_EXTRAS = {"dev", "bench"}

# About to be added (MQTT, wake word, voice activity, echo cancelling): audited now.
PLANNED: tuple[str, ...] = ()  # every package once planned is now a dependency

# Needed at run time but not on PyPI: (name, needed by, Debian/Raspberry Pi OS package).
NOT_ON_PYPI = (("libcamera (Python bindings)", "picamera2", "python3-libcamera"),)

# Debian's binary package where it is not python3-<name>.
DEBIAN_NAMES = {
    "pillow": "python3-pil",
    "systemd-python": "python3-systemd",
    "opencv-python-headless": "python3-opencv",
    "python-prctl": "python3-prctl",
    "attrs": "python3-attr",
    "videodev2": "python3-v4l2",
    "libarchive-c": "python3-libarchive-c",
}

# What the packages' own documentation says, for what the Raspberry Pi OS
# archive or piwheels would answer where this machine cannot ask them.
NOTES = {
    "picamera2": "picamera2's README: on Raspberry Pi OS (32- and 64-bit) `apt install "
    "python3-picamera2` (pre-installed on the desktop images; `--no-install-recommends` on "
    "Lite); pip works, but apt is recommended so that picamera2 and libcamera match. With apt, "
    "what it needs comes from the Raspberry Pi OS archive; the rows 'needed by picamera2' "
    "matter to a pip install only",
    "lgpio": "Raspberry Pi OS has python3-lgpio; gpiozero's install docs: a pip install may "
    "have to build it (python3-dev, swig, liblgpio-dev) where no wheel fits",
    "libcamera (Python bindings)": "picamera2/picamera2.py imports libcamera; not on PyPI: "
    "it comes with Raspberry Pi OS's libcamera, which python3-picamera2 pulls in",
    "soxr": "armv7l: no PyPI wheel and no Debian package, so pip builds it (a C compiler, "
    "cmake) unless piwheels has a wheel (Raspberry Pi OS's pip also looks there). "
    "systemd/install.sh installs it only as a wheel, and says so where there is none",
    "pymicro-features": "armv7l: no PyPI wheel, so the wake word ([voice]) needs a compiler "
    "or a piwheels wheel; systemd/install.sh installs [voice] only as wheels and says so "
    "where there are none (the button works without it)",
    "pywebrtc-audio": "armv7l: its markers leave it out (0.0.1 is a stub, 0.2.0 source only); "
    "the daemon runs half duplex there",
}

DEBIAN_SUITES = (  # (archive, suite): main only; later suites win
    ("debian", "bookworm"),
    ("debian", "bookworm-updates"),
    ("debian-security", "bookworm-security"),
)
DEBIAN_MIRRORS = {
    "debian": "https://deb.debian.org/debian",
    "debian-security": "https://deb.debian.org/debian-security",
}
RPI_ARCHIVE = "https://archive.raspberrypi.com/debian"
PIWHEELS = "https://www.piwheels.org/simple"
PYPI = "https://pypi.org/pypi"


class Unreachable(Exception):
    """A registry did not answer (offline, blocked, down)."""


class NotFound(Exception):
    """The registry answered: no such thing (HTTP 404)."""


Fetch = Callable[[str], bytes]


# ---------------------------------------------------------------- fetching


def http_fetch(
    cache_dir: Path | None, max_age_s: float = 86400.0, timeout_s: float = 30.0
) -> Fetch:
    """GET with a file cache; Unreachable or NotFound instead of urllib's zoo."""

    def fetch(url: str) -> bytes:
        cached = None
        if cache_dir is not None:
            cached = cache_dir / hashlib.sha256(url.encode()).hexdigest()[:32]
            if cached.exists() and time.time() - cached.stat().st_mtime < max_age_s:
                return cached.read_bytes()
        request = urllib.request.Request(url, headers={"User-Agent": "edge-daemon-wheel-audit"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body: bytes = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotFound(url) from None
            raise Unreachable(f"{url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"{url}: {reason}") from None
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(body)
        return body

    return fetch


# ---------------------------------------------------------------- what to audit


@dataclass
class Package:
    name: str  # canonical (PEP 503)
    display: str  # as written where it was found
    spec: SpecifierSet = field(default_factory=SpecifierSet)
    needed_by: list[str] = field(default_factory=list)  # "core", an extra, or a package
    planned: bool = False
    on_pypi: bool = True
    # Per machine: what the requirements whose markers apply there allow
    # (e.g. pymicro-vad>=2.1 on aarch64, ==1.0.2 on armv7l); absent: none apply.
    specs: dict[str, SpecifierSet] = field(default_factory=dict)

    def require(self, req: Requirement) -> None:
        self.spec &= req.specifier
        for machine in ARCHES:
            if applies(req, machine):
                self.specs[machine] = self.specs.get(machine, SpecifierSet()) & req.specifier


def runtime_requirements(pyproject: Path) -> list[tuple[Requirement, str]]:
    """Every runtime requirement in pyproject.toml, with where it came from:
    "core" for ``dependencies``, else the extra's name."""
    project = tomllib.loads(pyproject.read_text())["project"]
    found = [(Requirement(r), "core") for r in project.get("dependencies", [])]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        if extra not in NOT_RUNTIME_EXTRAS:
            found += [(Requirement(r), f"[{extra}]") for r in reqs]
    return found


def marker_env(machine: str) -> dict[str, str]:
    return {
        "python_version": PYTHON.rsplit(".", 1)[0],
        "python_full_version": PYTHON,
        "implementation_name": "cpython",
        "implementation_version": PYTHON,
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def applies(req: Requirement, machine: str) -> bool:
    if req.marker is None:
        return True
    try:
        return bool(req.marker.evaluate(marker_env(machine)))
    except InvalidMarker:
        return True


# ---------------------------------------------------------------- PyPI


def supported_tags(machine: str) -> set[Tag]:
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
    platforms += [f"manylinux2014_{machine}", f"linux_{machine}"]
    version = tuple(int(p) for p in PYTHON.split(".")[:2])
    tags = set(cpython_tags(version, abis=[f"cp{version[0]}{version[1]}"], platforms=platforms))
    tags |= set(compatible_tags(version, f"cp{version[0]}{version[1]}", platforms))
    return tags


@dataclass
class Wheel:
    version: str | None = None  # newest allowed version with a wheel for this machine
    platform: str | None = None  # its platform tag; "any" for pure Python
    newest: str | None = None  # newest allowed version with anything for 3.11 (sdist too)
    missing: bool = False  # not on PyPI at all
    unknown: str | None = None  # why it could not be looked up
    not_needed: bool = False  # no requirement's marker applies on this machine

    def cell(self) -> str:
        if self.not_needed:
            return "not installed here"
        if self.unknown:
            return "?"
        if self.missing:
            return "not on PyPI"
        if self.version is None:
            return f"source only ({self.newest})" if self.newest else "none for 3.11"
        where = "any platform" if self.platform == "any" else short_platform(self.platform)
        text = f"{self.version} ({where})"
        if self.newest and self.newest != self.version:
            text += f"; {self.newest} source only"
        return text


def short_platform(platform: str | None) -> str:
    found = re.fullmatch(r"(manylinux_\d+_\d+|manylinux2014|linux)_.*", platform or "")
    return found[1] if found else str(platform)


def python_ok(requires_python: str | None) -> bool:
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(PYTHON, prereleases=True)
    except InvalidSpecifier:
        return True


def best_wheel(project: dict[str, Any], spec: SpecifierSet, machine: str) -> Wheel:
    tags = supported_tags(machine)
    versions: list[tuple[Version, str]] = []
    for raw in project.get("releases", {}):
        try:
            versions.append((Version(raw), raw))
        except InvalidVersion:
            continue
    result = Wheel()
    for version, raw in sorted(versions, reverse=True):
        if version.is_prerelease and not spec.prereleases:
            continue
        if not spec.contains(version, prereleases=True):
            continue
        files = [
            f
            for f in project["releases"][raw]
            if not f.get("yanked") and python_ok(f.get("requires_python"))
        ]
        for f in files:
            if f.get("packagetype") != "bdist_wheel":
                continue
            try:
                _name, _ver, _build, wheel_tags = parse_wheel_filename(f["filename"])
            except InvalidWheelFilename:
                continue
            match = wheel_tags & tags
            if match:
                result.version = raw
                result.platform = sorted(t.platform for t in match)[0]
                break
        if files and result.newest is None:
            result.newest = raw
        if result.version is not None:
            return result
    return result


def requirements_of(project: dict[str, Any]) -> list[Requirement]:
    out = []
    for text in project.get("info", {}).get("requires_dist") or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and "extra" in str(req.marker):
            continue  # an optional feature, not what the package needs to run
        out.append(req)
    return out


# ---------------------------------------------------------------- Debian-style archives


def parse_packages(text: str, wanted: set[str]) -> dict[str, str]:
    """{package: version} from a Debian Packages index, for the wanted names."""
    found: dict[str, str] = {}
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            if name in wanted and version:
                found[name] = version
            name = version = None
        elif line.startswith("Package: "):
            name = line[9:].strip()
        elif line.startswith("Version: "):
            version = line[9:].strip()
    if name in wanted and version:
        found[name] = version
    return found


def upstream(version: str) -> str:
    """1:1.24.2-1+deb12u1 -> 1.24.2: the version people compare with PyPI's."""
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


class Archive:
    """One apt archive's Packages indexes (main) for arm64 and armhf."""

    def __init__(self, label: str, sources: Iterable[tuple[str, str]], fetch: Fetch) -> None:
        self.label = label
        self.sources = list(sources)  # (base URL, suite)
        self._fetch = fetch
        self._loaded: dict[str, dict[str, str]] = {}
        self.unreachable: str | None = None

    def lookup(self, deb_arch: str, names: set[str]) -> dict[str, str] | None:
        """{name: version} for the names this archive has; None if it did not answer."""
        if self.unreachable:
            return None
        if deb_arch not in self._loaded:
            found: dict[str, str] = {}
            for base, suite in self.sources:  # later suites (updates, security) win
                url = f"{base}/dists/{suite}/main/binary-{deb_arch}/Packages.xz"
                try:
                    text = lzma.decompress(self._fetch(url)).decode("utf-8", "replace")
                except NotFound:
                    continue
                except Unreachable as exc:
                    self.unreachable = str(exc)
                    return None
                except lzma.LZMAError as exc:
                    self.unreachable = f"{url}: not an xz Packages index ({exc})"
                    return None
                found.update(parse_packages(text, names))
            self._loaded[deb_arch] = found
        return {n: v for n, v in self._loaded[deb_arch].items() if n in names}


def debian_mirrors(apt_dir: Path = Path("/etc/apt")) -> dict[str, str]:
    """The Debian mirrors this machine's apt uses (one may be all it can reach),
    else deb.debian.org: {"debian": URL, "debian-security": URL}."""
    mirrors = dict(DEBIAN_MIRRORS)
    texts = []
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    found: dict[str, str] = {}
    for uri in re.findall(r"(?:^URIs:|^deb(?:\s+\[[^]]*\])?)\s+(\S+)", "\n".join(texts), re.M):
        uri = uri.rstrip("/")
        for archive in ("debian-security", "debian"):
            if uri.endswith("/" + archive):
                found.setdefault(archive, uri)
                break
    mirrors.update(found)
    return mirrors


def debian_name(package: Package) -> str:
    return DEBIAN_NAMES.get(package.name, f"python3-{package.name}")


# ---------------------------------------------------------------- piwheels


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href") or ""
            self.names.append(href.split("#", 1)[0].rsplit("/", 1)[-1])


def piwheels_wheel(name: str, spec: SpecifierSet, fetch: Fetch) -> Wheel:
    """The newest armv7l wheel piwheels has (it builds 32-bit ARM only)."""
    try:
        page = fetch(f"{PIWHEELS}/{name}/").decode("utf-8", "replace")
    except NotFound:
        return Wheel(missing=True)
    parser = _Links()
    parser.feed(page)
    releases: dict[str, list[dict[str, Any]]] = {}
    for filename in parser.names:
        if filename.endswith(".whl"):
            try:
                version = str(parse_wheel_filename(filename)[1])
            except InvalidWheelFilename:
                continue
            releases.setdefault(version, []).append(
                {"filename": filename, "packagetype": "bdist_wheel"}
            )
    return best_wheel({"releases": releases}, spec, "armv7l")


# ---------------------------------------------------------------- the audit


@dataclass
class Row:
    package: Package
    pypi: dict[str, Wheel] = field(default_factory=dict)  # by machine
    debian: dict[str, str | None] = field(default_factory=dict)  # by machine: version or None
    rpi: dict[str, str | None] = field(default_factory=dict)
    piwheels: Wheel | None = None

    @property
    def note(self) -> str:
        return NOTES.get(self.package.name, NOTES.get(self.package.display, ""))


@dataclass
class Report:
    rows: list[Row]
    unreachable: dict[str, str]  # source: why


def collect(pyproject: Path) -> list[Package]:
    """The direct runtime dependencies and the planned ones, in pyproject order."""
    packages: dict[str, Package] = {}
    for req, origin in runtime_requirements(pyproject):
        key = canonicalize_name(req.name)
        package = packages.setdefault(key, Package(key, req.name))
        package.require(req)
        if origin not in package.needed_by:
            package.needed_by.append(origin)
    for name in PLANNED:
        key = canonicalize_name(name)
        if key not in packages:
            packages[key] = Package(key, name, needed_by=["planned"], planned=True)
    return list(packages.values())


def audit(pyproject: Path, fetch: Fetch, *, rpi: bool = True, piwheels: bool = True) -> Report:
    unreachable: dict[str, str] = {}
    queue = collect(pyproject)
    known = {p.name: p for p in queue}
    rows: list[Row] = []
    projects: dict[str, dict[str, Any] | None] = {}

    def project(name: str) -> dict[str, Any] | None:
        if "PyPI" in unreachable:
            raise Unreachable(unreachable["PyPI"])
        if name not in projects:
            try:
                projects[name] = json.loads(fetch(f"{PYPI}/{name}/json"))
            except NotFound:
                projects[name] = None
            except Unreachable as exc:
                unreachable.setdefault("PyPI", str(exc))
                raise
        return projects[name]

    # Breadth first: each package's own runtime requirements join the queue.
    index = 0
    while index < len(queue):
        package = queue[index]
        index += 1
        row = Row(package)
        rows.append(row)
        try:
            data = project(package.name)
        except Unreachable:
            row.pypi = {m: Wheel(unknown="PyPI unreachable") for m in ARCHES}
            continue
        if data is None:
            row.pypi = {m: Wheel(missing=True) for m in ARCHES}
            continue
        row.pypi = {
            m: best_wheel(data, spec, m)
            if (spec := package.specs.get(m)) is not None
            else Wheel(not_needed=True)
            for m in ARCHES
        }
        for req in requirements_of(data):
            machines = [m for m in ARCHES if applies(req, m)]
            if not machines:
                continue
            key = canonicalize_name(req.name)
            child = known.get(key)
            if child is None:
                child = known[key] = Package(key, req.name, planned=package.planned)
                queue.append(child)
            child.require(req)
            child.planned = child.planned and package.planned
            if package.display not in child.needed_by:
                child.needed_by.append(package.display)
    for name, needed_by, _deb in NOT_ON_PYPI:
        if canonicalize_name(needed_by) in known:
            extra = Package(name, name, needed_by=[needed_by], on_pypi=False)
            rows.append(Row(extra, pypi={m: Wheel(missing=True) for m in ARCHES}))

    deb_names = {_deb_name(row) for row in rows}
    mirrors = debian_mirrors()
    archives = [
        ("debian", Archive("Debian 12", [(mirrors[a], s) for a, s in DEBIAN_SUITES], fetch)),
    ]
    if rpi:
        archives.append(("rpi", Archive("Raspberry Pi OS", [(RPI_ARCHIVE, "bookworm")], fetch)))
    for attr, archive in archives:
        for machine, deb_arch in ARCHES.items():
            found = archive.lookup(deb_arch, deb_names)
            for row in rows:
                value = None if found is None else found.get(_deb_name(row), "")
                getattr(row, attr)[machine] = value
        if archive.unreachable:
            unreachable[archive.label] = archive.unreachable
    if piwheels:
        for row in rows:
            if not row.package.on_pypi:
                continue
            try:
                spec = row.package.specs.get("armv7l", row.package.spec)
                row.piwheels = piwheels_wheel(row.package.name, spec, fetch)
            except Unreachable as exc:
                unreachable["piwheels"] = str(exc)
                break
    return Report(rows, unreachable)


def _deb_name(row: Row) -> str:
    for name, _needed_by, deb in NOT_ON_PYPI:
        if row.package.name == name:
            return deb
    return debian_name(row.package)


# ---------------------------------------------------------------- output


def deb_cell(row: Row, source: dict[str, str | None], machine: str) -> str:
    version = source.get(machine)
    if version is None:
        return "?"
    if not version:
        return "none"
    return f"{_deb_name(row)} {upstream(version)}"


def table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = [
        "package",
        "needed by",
        "aarch64: PyPI wheel",
        "arm64: Debian 12",
        "armv7l: PyPI wheel",
        "armhf: Debian 12",
    ]
    rpi_known = "Raspberry Pi OS" not in report.unreachable and any(r.rpi for r in report.rows)
    piwheels_known = "piwheels" not in report.unreachable and any(r.piwheels for r in report.rows)
    if rpi_known:
        header += ["arm64: Raspberry Pi OS", "armhf: Raspberry Pi OS"]
    if piwheels_known:
        header += ["armv7l: piwheels"]
    header.append("notes")
    lines = []
    for row in report.rows:
        p = row.package
        needed = ", ".join(p.needed_by) + (
            " (planned)" if p.planned and "planned" not in p.needed_by else ""
        )
        cells = [
            p.display,
            needed,
            row.pypi["aarch64"].cell(),
            deb_cell(row, row.debian, "aarch64"),
            row.pypi["armv7l"].cell(),
            deb_cell(row, row.debian, "armv7l"),
        ]
        if rpi_known:
            cells += [deb_cell(row, row.rpi, "aarch64"), deb_cell(row, row.rpi, "armv7l")]
        if piwheels_known:
            cells.append(row.piwheels.cell() if row.piwheels else "")
        cells.append(row.note)
        lines.append(cells)
    return header, lines


def render_text(report: Report) -> str:
    header, lines = table(report)
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header) - 1)]
    out = []
    for cells in [header, *lines]:
        out.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip())
        if cells[-1]:
            out[-1] += f"\n    {cells[-1]}"
    return "\n".join(out)


def render_markdown(report: Report) -> str:
    """The table, then its notes as a numbered list (too long for a cell)."""
    header, lines = table(report)
    out = ["| " + " | ".join(header[:-1]) + " |", "|" + "---|" * (len(header) - 1)]
    notes: list[str] = []
    for *cells, note in lines:
        if note:
            notes.append(f"{len(notes) + 1}. {cells[0]}: {note}")
            cells[0] += f" ({len(notes)})"
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def render_json(report: Report) -> str:
    header, lines = table(report)
    return json.dumps(
        {
            "rows": [dict(zip(header, cells, strict=True)) for cells in lines],
            "unreachable": report.unreachable,
        },
        indent=2,
    )


def main(argv: list[str] | None = None, fetch: Fetch | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wheel_audit",
        description="Which runtime dependencies have wheels or packages for aarch64 and armv7l "
        f"on CPython {PYTHON.rsplit('.', 1)[0]} (Debian 12 / Raspberry Pi OS Bookworm).",
    )
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table (the README's)")
    fmt.add_argument("--json", action="store_true", help="JSON: rows and unreachable sources")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--refresh", action="store_true", help="ignore the cache")
    parser.add_argument("--no-rpi", action="store_true", help="skip the Raspberry Pi OS archive")
    parser.add_argument("--no-piwheels", action="store_true", help="skip piwheels")
    args = parser.parse_args(argv)
    if fetch is None:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        fetch = http_fetch(cache_home / "edge-daemon" / "wheel-audit", 0 if args.refresh else 86400)
    try:
        report = audit(args.pyproject, fetch, rpi=not args.no_rpi, piwheels=not args.no_piwheels)
    except (OSError, KeyError, tomllib.TOMLDecodeError, InvalidRequirement) as exc:
        print(f"wheel_audit: cannot read {args.pyproject}: {exc}", file=sys.stderr)
        return 1
    render = render_json if args.json else render_markdown if args.markdown else render_text
    print(render(report))
    for source, why in report.unreachable.items():
        print(f"wheel_audit: {source} not reachable, its cells read '?': {why}", file=sys.stderr)
    return 2 if report.unreachable else 0


if __name__ == "__main__":
    sys.exit(main())
