"""The README's "Install on a Raspberry Pi" commands, run as written by a new
user on a bare Debian bookworm booted in systemd-nspawn.

The command blocks are read from README.md itself (between the
`<!-- section: install-on-pi -->` marker and the next one), so when the README
changes, this test runs the new commands. They run line by line in one login
shell of a user set up the way Raspberry Pi Imager sets up the first user of
Raspberry Pi OS (in the group sudo, no password asked), from their home
directory, on a root that has only what a fresh system has (sudo included; no
git, no python3-venv). What stands in for what a real Pi has:

- `<this repository's URL>`: a bare repository inside the container holding
  the checkout under test;
- the key pasted at `--api-key-file -`: the test key on standard input;
- Google's Gemini: the fake on the host, named in the config before the
  install (the installer keeps an existing config), so the service the
  installer starts talks to it;
- the user's editor behind `sudoedit`: a script that changes the voice, so
  the restart that follows has something to apply;
- the Pi's microphone, speaker, GPIO and camera: nothing. `edge-daemon doctor`
  exits non-zero for exactly those checks, and for nothing else.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from boot_container import BootedContainer, checkout_files, host_arch, timed
from boot_service import INPUT_WAV, OUTPUT_WAV, UNIT, FakeInThread, booted, new_fake
from conftest import ROOT, SECRET

pytestmark = pytest.mark.timeout(900)

SECTION = "install-on-pi"
USER = "pi"
HOME = f"/home/{USER}"
REPO = "/srv/edge-daemon.git"
URL_PLACEHOLDER = re.compile(r"<[^<>]*repository[^<>]*URL[^<>]*>")
EDITOR = "/usr/local/bin/edge-test-editor"
RUN_DIR = "/tmp/readme-run"
# What `edge-daemon doctor` cannot find in a container: the Pi's hardware.
NO_HARDWARE_HERE = {"microphone", "speaker", "gpio", "camera"}


# ---------------------------------------------------------------- the README


def section(markdown: str, name: str) -> str:
    """The text between `<!-- section: name -->` and the next section marker."""
    m = re.search(
        rf"<!-- section: {re.escape(name)} -->\n(.*?)(?=<!-- section: |\Z)", markdown, re.S
    )
    assert m, f"README.md has no <!-- section: {name} --> marker"
    return m[1]


def sh_blocks(markdown: str) -> list[str]:
    """The ```sh blocks, dedented (they sit in list items)."""
    blocks = re.findall(r"^([ \t]*)```sh\n(.*?)^\1```", markdown, re.S | re.M)
    return [textwrap.dedent(body) for _, body in blocks]


def commands(block: str) -> list[str]:
    """One command per non-empty, non-comment line, as the reader types them."""
    return [
        line.rstrip()
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_section_is_found_and_has_the_install_commands() -> None:
    """Not the boot: what it reads from the README (so a renamed marker or an
    emptied section fails here, not as a mysterious boot failure)."""
    lines = [
        c
        for b in sh_blocks(section((ROOT / "README.md").read_text(), SECTION))
        for c in commands(b)
    ]
    assert any("git clone" in line and URL_PLACEHOLDER.search(line) for line in lines), lines
    assert any("install.sh --api-key-file -" in line for line in lines), lines


# ---------------------------------------------------------------- the stand-ins


def make_repository(c: BootedContainer) -> str:
    """A bare repository inside the container holding the checkout under test
    (its working tree, uncommitted changes included): what the README's
    `<this repository's URL>` stands for."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "edge-daemon"
        work.mkdir()
        names = checkout_files(ROOT)
        subprocess.run(
            ["tar", "-C", str(ROOT), "-cf", f"{tmp}/files.tar", "--", *map(str, names)], check=True
        )
        subprocess.run(["tar", "-C", str(work), "-xf", f"{tmp}/files.tar"], check=True)
        git = ["git", "-C", str(work), "-c", "user.name=edge-test", "-c", "user.email=t@localhost"]
        for argv in (
            ["init", "-q", "-b", "main"],
            ["add", "-A"],
            ["commit", "-q", "-m", "under test"],
        ):
            subprocess.run([*git, *argv], check=True, capture_output=True)
        bare = Path(tmp) / "bare.git"
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, capture_output=True
        )
        # Copied in rather than cloned straight through /proc/PID/root: git
        # resolves that link, which points at the host's root.
        c.copy_tree(sorted(p.relative_to(bare) for p in bare.rglob("*")), bare, REPO)
    # The user's to read: git refuses a local repository someone else owns.
    c.run(["chown", "-R", f"{USER}:{USER}", REPO])
    return f"file://{REPO}"


def make_first_user(c: BootedContainer) -> None:
    """The user Raspberry Pi Imager creates: in the group sudo, with the
    sudoers drop-in Raspberry Pi OS gives it (no password asked)."""
    c.run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", USER])
    c.write(f"/etc/sudoers.d/010_{USER}-nopasswd", f"{USER} ALL=(ALL) NOPASSWD: ALL\n", 0o440)


# The owner's edit at step 4: another voice (sudoedit hands the editor a copy).
EDITOR_SCRIPT = """\
#!/bin/sh
set -e
for f in "$@"; do sed -i 's/^voice = "Kore"$/voice = "Puck"/' "$f"; done
"""


def readme_config(fake_url: str) -> str:
    """The owner's config, there before the install (which keeps it): the fake
    as Gemini, WAV files as the sound card. The unit itself stays as installed."""
    return f"""\
# The README test's config
[gemini]
endpoint = "{fake_url}"
voice = "Kore"

[audio]
backend = "wav"
input_wav = "{INPUT_WAV}"
output_wav = "{OUTPUT_WAV}"
"""


def script(blocks: list[str], url: str) -> tuple[str, list[str]]:
    """A bash script running each command line as written, in one shell (a
    `cd` carries on), each one's output and exit status kept apart. Only the
    line that reads the key from standard input gets it."""
    lines = [c for b in blocks for c in commands(b)]
    out = ["set -u", f"mkdir -p {RUN_DIR}", f"export SUDO_EDITOR={EDITOR}"]
    for i, written in enumerate(lines):
        line = URL_PLACEHOLDER.sub(url, written)
        stdin = "" if "--api-key-file -" in line else " </dev/null"
        # A newline before `}`: a line may end in a comment.
        out.append(f"{{ {line}\n}}{stdin} >{RUN_DIR}/{i}.out 2>&1; echo $? >{RUN_DIR}/{i}.rc")
    return "\n".join(out) + "\n", lines


@dataclass
class Ran:
    line: str
    rc: int
    output: str


@dataclass
class ReadmeRun:
    c: BootedContainer
    fake: FakeInThread
    ran: list[Ran]

    def of(self, fragment: str) -> list[Ran]:
        found = [r for r in self.ran if fragment in r.line]
        assert found, f"no README command with {fragment!r}: {[r.line for r in self.ran]}"
        return found


@pytest.fixture(scope="module")
def readme_run(speech_wav: Path, pi_roots_in_background: None) -> Iterator[ReadmeRun]:
    blocks = sh_blocks(section((ROOT / "README.md").read_text(), SECTION))
    with booted(host_arch()) as c:
        fake = new_fake()
        try:
            make_first_user(c)
            url = make_repository(c)
            c.write("/etc/edge-daemon/config.toml", readme_config(fake.fake.url))
            c.write(INPUT_WAV, speech_wav.read_bytes())
            c.write(EDITOR, EDITOR_SCRIPT, 0o755)
            text, lines = script(blocks, url)
            c.write("/tmp/readme-pi.sh", text)
            with timed(c.arch, "README Pi commands"):
                c.run(
                    ["runuser", "--login", USER, "--command", "bash /tmp/readme-pi.sh"],
                    stdin=SECRET + "\n",
                    timeout_s=900,
                )
            ran = [
                Ran(
                    line,
                    int(c.path(f"{RUN_DIR}/{i}.rc").read_text()),
                    c.path(f"{RUN_DIR}/{i}.out").read_text(errors="replace"),
                )
                for i, line in enumerate(lines)
            ]
            yield ReadmeRun(c, fake, ran)
        finally:
            fake.stop()


def _doctor(line: str) -> bool:
    return "edge-daemon doctor" in line


def test_every_command_succeeds(readme_run: ReadmeRun) -> None:
    for r in readme_run.ran:
        if not _doctor(r.line):
            assert r.rc == 0, f"`{r.line}` exited {r.rc}:\n{r.output[-3000:]}"


def test_the_clone_is_the_users_and_the_key_was_never_shown(readme_run: ReadmeRun) -> None:
    c = readme_run.c
    owner = c.run(["stat", "-c", "%U", f"{HOME}/edge-daemon/.git"]).stdout.strip()
    assert owner == USER
    for r in readme_run.ran:
        assert SECRET not in r.output, r.line
    install = readme_run.of("install.sh --api-key-file -")[0].output
    assert "key read from standard input" in install
    assert c.path("/etc/edge-daemon/gemini-api-key").read_text().strip() == SECRET
    assert SECRET not in c.journal("-o", "json")


def test_the_installer_started_the_service_with_the_key(readme_run: ReadmeRun) -> None:
    c = readme_run.c
    install = readme_run.of("install.sh --api-key-file -")[0].output
    assert "active (running) as edge-daemon" in install
    assert "kept your /etc/edge-daemon/config.toml" in install
    assert c.run(["systemctl", "is-active", UNIT]).stdout.strip() == "active"
    assert c.run(["systemctl", "is-enabled", UNIT]).stdout.strip() == "enabled"
    # The unit as installed: no test drop-in anywhere.
    assert not c.path(f"/etc/systemd/system/{UNIT}.service.d").exists()
    first = readme_run.fake.read(lambda f: f.connections[0])
    assert first.auth_method == "header"


def test_the_config_edit_and_restart_take_effect(readme_run: ReadmeRun) -> None:
    """Step 4: sudoedit changed the config, and the restart brought a new
    session with the new voice; the sessions before it had the old one."""
    c = readme_run.c
    assert 'voice = "Puck"' in c.path("/etc/edge-daemon/config.toml").read_text()
    voices = readme_run.fake.read(
        lambda f: [
            re.findall(r'"voiceName": "(\w+)"', json.dumps(conn.setup)) for conn in f.connections
        ]
    )
    assert voices[0] == ["Kore"] and voices[-1] == ["Puck"], voices
    assert c.run(["systemctl", "is-active", UNIT]).stdout.strip() == "active"


def test_doctor_fails_only_for_the_hardware_a_container_lacks(readme_run: ReadmeRun) -> None:
    for r in readme_run.of("edge-daemon doctor"):
        lines = re.findall(r"^(PASS|FAIL|WARN|SKIP)\s+(\S+)", r.output, re.M)
        assert lines, f"`{r.line}` printed no checks:\n{r.output}"
        by_name = {name: status for status, name in lines}
        failed = {name for name, status in by_name.items() if status == "FAIL"}
        assert failed <= NO_HARDWARE_HERE, f"`{r.line}`:\n{r.output}"
        for name in ("config", "api_key", "endpoint", "service_user", "service"):
            assert by_name.get(name) == "PASS", f"`{r.line}`: {name}\n{r.output}"
        if "--live" in r.line:
            assert by_name.get("live") == "PASS", r.output
        # "It exits non-zero if anything fails."
        assert r.rc == (1 if failed else 0), r.output
