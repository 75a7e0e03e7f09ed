"""A bare Debian bookworm root booted with systemd-nspawn: a real systemd (PID 1
of its own namespace) for end-to-end tests of the installed service, on this
machine's architecture or, through qemu-user-static's binfmt handlers, on the
Raspberry Pi's (arm64, armhf).

Each root file system is built once with debootstrap and cached outside the
checkout, named by a digest of its recipe; every container runs on a
throw-away overlay over it, so each test module starts from a pristine system.
See TEST-RECIPES.md, "A real systemd, booted in a container" and "The same
boot on aarch64 and armhf". `python tests/boot_container.py build` builds the
roots ahead of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

CACHE = Path(os.environ.get("EDGE_BOOT_CACHE", "/var/cache/edge-daemon-test"))
RUNS = CACHE / "runs"
# One line per measured step (root builds, installs, boots, turns); .ci/run
# names a fresh file for each run and prints it at the end.
TIMINGS = Path(os.environ.get("EDGE_BOOT_TIMINGS", str(CACHE / "timings.log")))
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# A bare system: Debian's minbase with systemd and python3, plus the two things
# Raspberry Pi OS Lite ships that minbase lacks and the README relies on: sudo
# and ca-certificates. Nothing else the installer installs: its apt step must
# run for real, so a wrong name in its package list fails the boot tests.
BARE = ("systemd", "systemd-sysv", "dbus", "libnss-systemd", "python3", "sudo", "ca-certificates")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Arch:
    """A Debian architecture the boot tests can run: natively, or through
    qemu-user-static's binfmt handler ``qemu`` (its name in binfmt_misc)."""

    name: str
    qemu: str
    machine: str  # `uname -m` inside


ARCHES = {
    a.name: a
    for a in (
        Arch("amd64", "qemu-x86_64", "x86_64"),
        Arch("arm64", "qemu-aarch64", "aarch64"),  # Raspberry Pi OS 64-bit
        Arch("armhf", "qemu-arm", "armv7l"),  # Raspberry Pi OS 32-bit (Pi 3, Zero 2 W)
    )
}
# What the boot tests boot besides the host's own architecture: the Raspberry
# Pi's (tests/test_boot_arm.py).
PI_ARCHES = ("arm64", "armhf")
# Everything runs several times slower under qemu-user: timeouts grow by this
# much there, the expectations stay the same.
EMULATION_SLOWDOWN = 8.0
BINFMT = Path("/proc/sys/fs/binfmt_misc")

T = TypeVar("T")


class ContainerError(AssertionError):
    """A command in the container failed; the message carries its output."""


def wait_until(
    condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Poll ``condition`` until it is truthy; for states nothing announces (a PID
    appearing, a unit property changing), with a deadline and a short interval."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


@functools.cache
def host_arch() -> str:
    done = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return done.stdout.strip()
    by_machine = {a.machine: a.name for a in ARCHES.values()}
    return by_machine.get(os.uname().machine, os.uname().machine)


def emulated(arch: str) -> bool:
    return arch != host_arch()


def slowdown(arch: str) -> float:
    """How much longer than natively anything takes on ``arch`` here."""
    return EMULATION_SLOWDOWN if emulated(arch) else 1.0


def record_timing(arch: str, what: str, seconds: float) -> None:
    """One line in the timings log (CI prints it) and on stderr."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {arch:<6} {what:<28} {seconds:7.1f} s"
    print(f"[boot] {line}", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        with TIMINGS.open("a") as f:
            f.write(line + "\n")


@contextlib.contextmanager
def timed(arch: str, what: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    record_timing(arch, what, time.monotonic() - start)


# ---------------------------------------------------------------- can it run here?


def why_not_runnable(arch: str | None = None) -> str | None:
    """None if a container of ``arch`` (the host's by default) can be booted
    here, else the reason it cannot."""
    if os.environ.get("EDGE_SKIP_BOOT_TEST") == "1":
        return "EDGE_SKIP_BOOT_TEST=1"
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn and overlay mounts)"
    tools = ("systemd-nspawn", "debootstrap", "nsenter", "mount", "umount")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        return f"needs {', '.join(missing)}: apt-get install systemd-container debootstrap"
    if arch is not None and emulated(arch):
        return why_not_emulated(ARCHES[arch])
    return None


def why_not_emulated(arch: Arch) -> str | None:
    """None if ``arch``'s binaries run here through qemu-user inside a container."""
    handler = BINFMT / arch.qemu
    how = (
        "apt-get install qemu-user-static binfmt-support; "
        "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable"
    )
    try:
        text = handler.read_text()
    except OSError:
        return f"{arch.name} needs the binfmt handler {handler}: {how}"
    if not text.startswith("enabled"):
        return f"{arch.name}: the binfmt handler {handler} is disabled: {how}"
    flags = re.search(r"^flags:\s*(\S*)", text, re.M)
    if not flags or "F" not in flags[1]:
        # Without F the interpreter is looked up inside the container, where it is not.
        return f"{arch.name}: {handler} lacks the F flag (qemu-user-static sets it): {how}"
    return None


def reachable(host: str, port: int, timeout_s: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout_s):
            return True
    except OSError:
        return False


def apt_mirror(sources: Path = Path("/etc/apt/sources.list.d")) -> str:
    """The Debian mirror the host's apt already uses (not the security archive)."""
    for path in sorted(sources.glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
            if uris and suites and SUITE in suites[1].split():
                return uris[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", legacy.read_text(), re.M)
        if m:
            return m[1]
    return DEFAULT_MIRROR


def host_of(url: str) -> tuple[str, int]:
    m = re.match(r"(\w+)://([^/:]+)(?::(\d+))?", url)
    if not m:
        raise ValueError(f"not a URL: {url}")
    return m[2], int(m[3] or (443 if m[1] == "https" else 80))


# ---------------------------------------------------------------- the cached root


@dataclass(frozen=True)
class Recipe:
    """Everything a root is made from. Its digest names the cached root, so a
    change to any of it (packages, mirror, the steps after debootstrap) builds
    a new root instead of reusing a stale one."""

    arch: str
    mirror: str
    suite: str = SUITE
    include: tuple[str, ...] = BARE
    # After debootstrap: no login prompt on the console (nobody reads it, and
    # it would hold the tty).
    masked_units: tuple[str, ...] = ("console-getty.service",)

    @property
    def path(self) -> Path:
        digest = hashlib.sha256(repr(self).encode()).hexdigest()[:12]
        return CACHE / f"rootfs-{self.arch}-{digest}"


def recipe(arch: str | None = None, mirror: str | None = None) -> Recipe:
    return Recipe(arch=arch or host_arch(), mirror=mirror or apt_mirror())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_rootfs(r: Recipe, log: Callable[[str], None] = print) -> Path:
    """The cached root for ``r``, built first if need be (one builder per
    recipe at a time; others wait, so a root being built in the background is
    waited for, not built twice).

    Built in a temporary directory and renamed into place when complete, so a
    build that was interrupted is never mistaken for a finished one.
    """
    final = r.path
    with _locked(final.with_name(final.name + ".lock")):
        if final.is_dir():
            return final
        for stale in CACHE.glob(f"build-{final.name}-*"):  # left by an interrupted build
            remove_tree(stale)
        work = Path(tempfile.mkdtemp(prefix=f"build-{final.name}-", dir=CACHE))
        target = work / "rootfs"
        how = "through qemu-user" if emulated(r.arch) else "natively"
        log(f"building {final} ({r.arch}, {how}) with debootstrap from {r.mirror}")
        start = time.monotonic()
        done = subprocess.run(
            [
                "debootstrap",
                f"--arch={r.arch}",
                "--variant=minbase",
                f"--include={','.join(r.include)}",
                r.suite,
                str(target),
                r.mirror,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            remove_tree(work)
            raise RuntimeError(f"debootstrap failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        for unit in r.masked_units:
            link = target / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        target.rename(final)
        work.rmdir()
        record_timing(r.arch, "root build (debootstrap)", time.monotonic() - start)
        return final


# ---------------------------------------------------------------- processes


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid``: with the PID, names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int | None, start: str | None) -> bool:
    if pid is None or start is None or _start_time(pid) != start:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    # A zombie is dead: once its parent is gone nothing may ever reap it.
    return state != "Z"


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _umount(path: Path) -> None:
    if not _mounted(path):
        return
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _mounts_under(path: Path) -> list[Path]:
    top = str(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [Path(p) for p in points if p == top or p.startswith(top + "/")]


def remove_tree(path: Path) -> None:
    """`rm -rf` that never reaches into another file system: a debootstrap or
    a container that was killed leaves proc, sys or an overlay mounted below
    ``path``. Those are unmounted first (deepest first), and rm stays on
    ``path``'s own file system whatever is left."""
    for mount in sorted(_mounts_under(path), key=lambda p: len(p.parts), reverse=True):
        _umount(mount)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


# ---------------------------------------------------------------- one container


class BootedContainer:
    """A booted container on an overlay of ``rootfs``.

    ``start()`` boots it and waits for systemd to finish booting; ``run()``
    executes a command inside through nsenter; ``teardown()`` always runs (from
    a fixture's finally), and ``cleanup_stale()`` ends what a killed earlier run
    left behind.
    """

    def __init__(self, rootfs: Path, name: str | None = None, arch: str | None = None) -> None:
        self.rootfs = rootfs
        self.arch = arch or host_arch()
        # Under qemu-user every wait is stretched by this much.
        self.slow = slowdown(self.arch)
        self.name = name or f"edge-test-{os.getpid()}-{secrets.token_hex(3)}"
        self.dir = RUNS / self.name
        self.mountpoint = self.dir / "root"
        self.console = self.dir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid: int | None = None

    # ---- lifecycle

    def _record(self, **fields: object) -> None:
        path = self.dir / "record.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(fields)
        path.write_text(json.dumps(data))

    def start(self, timeout_s: float = 60.0) -> None:
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._record(owner=os.getpid(), owner_start=_start_time(os.getpid()))
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.rootfs},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}",
                str(self.mountpoint),
            ],
            check=True,
            capture_output=True,
        )
        with self.console.open("wb") as console:
            self.proc = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    f"--machine={self.name}",
                    "-D",
                    str(self.mountpoint),
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for pytest must not reach it
                # before the teardown shuts the container down in order.
                start_new_session=True,
            )
        self._record(nspawn=self.proc.pid, nspawn_start=_start_time(self.proc.pid))
        self.init_pid = wait_until(
            self._find_init, timeout_s * self.slow, "the container's systemd"
        )
        self._record(init=self.init_pid, init_start=_start_time(self.init_pid))
        self.wait_running(timeout_s)

    def wait_running(self, timeout_s: float = 60.0) -> str:
        """Wait until systemd inside has finished booting; its state, running or degraded."""
        wait_until(
            lambda: self.path("/run/systemd/private").exists(),
            timeout_s * self.slow,
            "systemd's private bus",
        )
        # --wait blocks until the boot is over: systemd's own event, no polling.
        state = self.run(
            ["systemctl", "is-system-running", "--wait"], check=False, timeout_s=timeout_s
        ).stdout.strip()
        if state not in ("running", "degraded"):
            raise ContainerError(f"the container did not boot: {state}\n{self.console_text()}")
        return state

    def _find_init(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited ({self.proc.returncode}):\n{self.console_text()}"
            )
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
        return None

    def teardown(self, timeout_s: float = 30.0) -> None:
        """Power off, wait, unmount, remove: each step runs even if one before failed."""
        timeout_s *= self.slow
        try:
            if self.proc is not None and self.proc.poll() is None:
                if self.init_pid is not None:
                    self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout_s=10)
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self._kill()
                    self.proc.wait(10)
        finally:
            _umount(self.mountpoint)
            remove_tree(self.dir)
            Path(f"/run/systemd/nspawn/propagate/{self.name}").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                Path(f"/run/systemd/nspawn/propagate/{self.name}").rmdir()

    def _kill(self) -> None:
        # SIGKILL to a namespace's init ends every process in it.
        if self.init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    # ---- inside

    def path(self, inside: str) -> Path:
        """A path inside the container, as the host sees it (through init's root)."""
        assert self.init_pid is not None
        return Path(f"/proc/{self.init_pid}/root") / inside.lstrip("/")

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout_s: float = 60.0,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside, as root, with a clean environment plus ``env``
        (and ``stdin`` as its standard input). ``timeout_s`` is native time:
        it is stretched under emulation.

        The environment is handed to nsenter (which passes its own on) rather
        than spelled out with `env -i VAR=...`, so values such as a test key never
        appear on any command line.
        """
        assert self.init_pid is not None
        clean = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        done = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", *argv],
            env=clean,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s * self.slow,
            check=False,
        )
        if check and done.returncode != 0:
            raise ContainerError(
                f"{' '.join(argv)} -> exit {done.returncode}\n"
                f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
            )
        return done

    def sh(self, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run(["bash", "-c", script], **kwargs)  # type: ignore[arg-type]

    def write(self, inside: str, data: str | bytes, mode: int = 0o644) -> None:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)

    def copy_tree(self, files: Sequence[Path], base: Path, inside: str) -> None:
        """Copy ``files`` (relative to ``base``) to the directory ``inside``."""
        dest = self.path(inside)
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as buf:
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for rel in files:
                    tar.add(base / rel, arcname=str(rel), recursive=False)
            buf.seek(0)
            with tarfile.open(fileobj=buf, mode="r") as tar:
                tar.extractall(dest, filter="tar")

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    # ---- systemd inside

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> str:
        return self.run(["journalctl", "--no-pager", *args]).stdout


def checkout_files(root: Path) -> list[Path]:
    """What the copy of the checkout holds: tracked and untracked-but-not-ignored
    files (the recipe's `git ls-files -co --exclude-standard`), minus deleted ones."""
    done = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        names = [Path(n) for n in done.stdout.decode().split("\0") if n]
    else:  # not a git checkout (an unpacked archive): everything but caches
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
        names = [
            p.relative_to(root)
            for p in root.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(root).parts)
        ]
    return [n for n in names if (root / n).is_file()]


def cleanup_stale(log: Callable[[str], None] = print) -> None:
    """End containers and mounts left by runs that were killed (SIGKILL, OOM,
    a lost CI runner); runs whose pytest is still alive are left alone."""
    if not RUNS.is_dir():
        return
    for run_dir in RUNS.iterdir():
        try:
            record = json.loads((run_dir / "record.json").read_text())
        except (OSError, ValueError):
            record = {}
        if _alive(record.get("owner"), record.get("owner_start")):
            continue
        log(f"cleaning up a container left by an earlier run: {run_dir.name}")
        for pid_key in ("init", "nspawn"):
            pid, start = record.get(pid_key), record.get(f"{pid_key}_start")
            if _alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    wait_until(lambda p=pid, s=start: not _alive(p, s), 10, f"PID {pid} to end")
        remove_tree(run_dir)
        propagate = Path(f"/run/systemd/nspawn/propagate/{run_dir.name}")
        remove_tree(propagate)


def build_in_background(arches: Sequence[str]) -> subprocess.Popen[bytes] | None:
    """Start building the roots of ``arches`` that are missing, one after the
    other, in a process of their own (it finishes its build even if the tests
    stop). A test that needs one waits for it: ensure_rootfs's lock. Its
    output goes to background-build.log in the cache."""
    missing = [a for a in arches if not why_not_runnable(a) and not recipe(a).path.is_dir()]
    if not missing:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "background-build.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "build", *missing],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """`python tests/boot_container.py build [ARCH ...]`: build the cached roots
    ahead of the tests (a test that needs a root still being built waits for
    it)."""
    parser = argparse.ArgumentParser(prog="boot_container.py", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser(
        "build", help="build the cached root of each ARCH (default: every one the tests boot)"
    )
    build.add_argument("arches", nargs="*", metavar="ARCH", help=", ".join(ARCHES))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.arches) - set(ARCHES))
    if unknown:
        parser.error(f"unknown architecture {', '.join(unknown)} (known: {', '.join(ARCHES)})")
    status = 0
    for arch in args.arches or dict.fromkeys((host_arch(), *PI_ARCHES)):
        reason = why_not_runnable(arch)
        if reason:
            print(f"boot_container.py: {arch}: cannot build here: {reason}", file=sys.stderr)
            status = 1
            continue
        try:
            print(ensure_rootfs(recipe(arch), lambda text: print(text, file=sys.stderr)))
        except RuntimeError as exc:
            print(f"boot_container.py: {arch}: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
