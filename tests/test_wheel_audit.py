"""tools/wheel_audit.py: against recorded registry answers (no network), offline,
and in step with pyproject.toml and the README's table."""

from __future__ import annotations

import importlib.util
import json
import lzma
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = Path(__file__).parent / "support"
SCRIPT = ROOT / "tools" / "wheel_audit.py"


@pytest.fixture(scope="module")
def wa() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheel_audit", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wheel_audit"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def recorded(wa: ModuleType, *, debian: bool = True) -> Callable[[str], bytes]:
    """Answers recorded from PyPI and Debian's archive (trimmed); everything else
    (Raspberry Pi OS, piwheels) is out of reach, as it is on the CI machine."""
    pypi = json.loads((SUPPORT / "wheel_audit_pypi.json").read_text())
    packages = {
        arch: lzma.compress((SUPPORT / f"wheel_audit_debian_{arch}.txt").read_bytes())
        for arch in ("arm64", "armhf")
    }

    def fetch(url: str) -> bytes:
        found = re.fullmatch(r"https://pypi\.org/pypi/([^/]+)/json", url)
        if found:
            if found[1] not in pypi:
                raise wa.NotFound(url)
            return json.dumps(pypi[found[1]]).encode()
        found = re.fullmatch(
            r"https?://deb\.debian\.org/debian/dists/bookworm/main/binary-(\w+)/Packages\.xz", url
        )
        if found and debian:
            return packages[found[1]]
        if "deb.debian.org" in url and debian:
            raise wa.NotFound(url)  # no updates or security entries in the recording
        raise wa.Unreachable(f"{url}: Name or service not known")

    return fetch


def write_pyproject(path: Path, deps: list[str], extras: dict[str, list[str]]) -> Path:
    lines = [
        "[project]",
        'name = "x"',
        f"dependencies = {json.dumps(deps)}",
        "",
        "[project.optional-dependencies]",
    ]
    lines += [f"{name} = {json.dumps(reqs)}" for name, reqs in extras.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_report_from_recorded_answers(
    wa: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(wa, "PLANNED", ())
    monkeypatch.setattr(wa, "debian_mirrors", lambda: dict(wa.DEBIAN_MIRRORS))  # not this host's
    pyproject = write_pyproject(
        tmp_path / "pyproject.toml",
        ["numpy>=1.22", "gpiozero>=2.0"],
        {"audio": ["pyaudio>=0.2.13"], "pi": ["lgpio"], "dev": ["pytest>=8"]},
    )
    status = wa.main(["--json", "--pyproject", str(pyproject)], fetch=recorded(wa))
    out, err = capsys.readouterr()
    assert status == 2, "Raspberry Pi OS and piwheels were out of reach"
    report = json.loads(out)
    rows = {r["package"]: r for r in report["rows"]}
    # pytest is a dev tool, not run time; colorzero and setuptools come in through gpiozero.
    assert list(rows) == ["numpy", "gpiozero", "pyaudio", "lgpio", "colorzero", "setuptools"]
    assert rows["colorzero"]["needed by"] == "gpiozero"
    assert rows["pyaudio"]["needed by"] == "[audio]"
    # numpy 2.5.5 needs Python 3.12: the newest for 3.11 is 2.4.6, with an aarch64
    # wheel but none for armv7l; macOS and x86_64 wheels are not taken.
    assert rows["numpy"]["aarch64: PyPI wheel"] == "2.4.6 (manylinux_2_27)"
    assert rows["numpy"]["armv7l: PyPI wheel"] == "source only (2.4.6)"
    assert rows["numpy"]["arm64: Debian 12"] == "python3-numpy 1.24.2"
    assert rows["gpiozero"]["armv7l: PyPI wheel"] == "2.0.1.post3 (any platform)"
    assert rows["gpiozero"]["armhf: Debian 12"] == "python3-gpiozero 1.6.2"
    assert rows["pyaudio"]["aarch64: PyPI wheel"] == "source only (0.2.14)"
    assert rows["lgpio"]["aarch64: PyPI wheel"] == "0.2.2.0 (manylinux_2_34)"
    assert rows["lgpio"]["armv7l: PyPI wheel"] == "0.2.2.0 (linux)"
    assert rows["lgpio"]["arm64: Debian 12"] == "none"
    assert "python3-lgpio" in rows["lgpio"]["notes"]
    assert set(report["unreachable"]) == {"Raspberry Pi OS", "piwheels"}
    assert err.count("not reachable") == 2 and "Traceback" not in err


def test_unreachable_registries_leave_question_marks_not_tracebacks(
    wa: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(url: str) -> bytes:
        raise wa.Unreachable(f"{url}: Network is unreachable")

    pyproject = write_pyproject(tmp_path / "pyproject.toml", ["numpy"], {})
    assert wa.main(["--pyproject", str(pyproject)], fetch=offline) == 2
    out, err = capsys.readouterr()
    assert re.search(r"^numpy\s+core\s+\?\s+\?\s+\?\s+\?", out, re.M), out
    assert {line.split(" not reachable")[0] for line in err.splitlines()} == {
        "wheel_audit: PyPI",
        "wheel_audit: Debian 12",
        "wheel_audit: Raspberry Pi OS",
        "wheel_audit: piwheels",
    }


def test_a_broken_pyproject_is_one_line(
    wa: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[project\n")
    assert wa.main(["--pyproject", str(bad)], fetch=recorded(wa)) == 1
    _out, err = capsys.readouterr()
    assert err.startswith("wheel_audit: cannot read") and err.count("\n") == 1
    assert wa.main(["--pyproject", str(tmp_path / "missing.toml")], fetch=recorded(wa)) == 1


def test_the_script_offline_says_so_in_one_line_per_registry(tmp_path: Path) -> None:
    """The real script with no way out: every request goes to a closed port."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")
    }
    env |= {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--refresh"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 4 and all(" not reachable, its cells read '?': " in line for line in lines)


def _runtime_names(pyproject: Path, wa: ModuleType) -> set[str]:
    """Read without the script's help: dependencies and every extra but dev and bench."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    assert set(extras) >= wa.NOT_RUNTIME_EXTRAS, "an extra the audit leaves out no longer exists"
    reqs = list(project["dependencies"])
    reqs += [r for name, rs in extras.items() if name not in ("dev", "bench") for r in rs]
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in reqs}


def test_every_runtime_dependency_in_pyproject_is_audited(wa: ModuleType) -> None:
    names = _runtime_names(ROOT / "pyproject.toml", wa)
    assert {"websockets", "gpiozero", "numpy", "picamera2", "lgpio", "pyaudio"} <= names
    audited = {p.display.lower() for p in wa.collect(ROOT / "pyproject.toml")}
    assert names <= audited, f"not audited: {names - audited}"
    assert {n.lower() for n in wa.PLANNED} <= audited


def test_the_readme_table_has_a_row_for_every_runtime_dependency(wa: ModuleType) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- wheel-audit -->\n(.*?)<!-- /wheel-audit -->", readme, re.S)
    assert block, "README.md: the wheel table between <!-- wheel-audit --> markers is gone"
    rows = {
        re.sub(r" \(\d+\)$", "", line.split("|")[1].strip()).lower()
        for line in block[1].splitlines()
        if line.startswith("| ") and not line.startswith("| package")
    }
    wanted = _runtime_names(ROOT / "pyproject.toml", wa) | {n.lower() for n in wa.PLANNED}
    assert wanted <= rows, (
        f"README.md's wheel table lacks {sorted(wanted - rows)}: "
        "paste in `.venv/bin/python tools/wheel_audit.py --markdown`"
    )


def test_debian_mirrors_come_from_apts_sources(wa: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert wa.debian_mirrors(tmp_path) == {
        "debian": "http://mirror.example/debian",
        "debian-security": "http://mirror.example/debian-security",
    }
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb [arch=arm64] http://other.example/debian bookworm main\n"
    )
    assert wa.debian_mirrors(tmp_path) == {
        "debian": "http://other.example/debian",
        "debian-security": "https://deb.debian.org/debian-security",
    }


def test_requirements_are_read_per_machine_through_their_markers(
    wa: ModuleType, tmp_path: Path
) -> None:
    """A package pinned differently per machine is audited at each machine's
    own pin; one that no marker lets onto a machine is not installed there."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[project]\nname = 'x'\nversion = '0'\ndependencies = []\n"
        "[project.optional-dependencies]\nvoice = [\n"
        "  \"pymicro-vad>=2.1; platform_machine != 'armv7l'\",\n"
        "  \"pymicro-vad==1.0.2; platform_machine == 'armv7l'\",\n"
        "  \"pywebrtc-audio>=0.2; platform_machine != 'armv7l'\",\n]\n"
    )
    packages = {p.name: p for p in wa.collect(pyproject)}
    vad, aec = packages["pymicro-vad"], packages["pywebrtc-audio"]
    assert {m: str(s) for m, s in vad.specs.items()} == {"aarch64": ">=2.1", "armv7l": "==1.0.2"}
    assert set(aec.specs) == {"aarch64"}
    assert wa.Wheel(not_needed=True).cell() == "not installed here"
