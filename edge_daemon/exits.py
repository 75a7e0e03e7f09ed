"""Exit statuses of every ``edge-daemon`` command, one meaning each.

The numbers follow sysexits.h where one fits, so systemd units and scripts can
act on them: the unit does not restart on ``CONFIG`` (``RestartPreventExitStatus=78``)
and restarts on everything else that is not 0.
"""

from __future__ import annotations

OK = 0
# The command ran and the answer is "no": a control request refused, a check
# that failed, a wait that timed out.
FAILED = 1
# Bad arguments (argparse's own status).
USAGE = 2
# EX_UNAVAILABLE: the daemon is not running, or its control socket cannot be reached.
UNAVAILABLE = 69
# EX_SOFTWARE: an internal error, a bug; the message says what, the log has the details.
SOFTWARE = 70
# EX_IOERR: a sound device or the camera was gone longer than its grace time
# (audio.device_grace_s, camera.device_grace_s); a fresh process may find it.
DEVICE_LOST = 74
# EX_CONFIG: the config file or the key is wrong; restarting cannot fix it.
CONFIG = 78
# 128 + SIGINT: stopped with Ctrl-C.
INTERRUPTED = 130

MEANINGS: dict[int, str] = {
    OK: "success (for `run`: stopped cleanly by SIGTERM/SIGINT)",
    FAILED: "the command ran and the answer is no: a control request refused, a doctor "
    "check failed, `ctl wait` timed out",
    USAGE: "bad arguments",
    UNAVAILABLE: "the daemon is not running or its control socket cannot be reached",
    SOFTWARE: "an internal error (a bug): the message says what, the log has the details",
    DEVICE_LOST: "`run`: a microphone, speaker or camera stalled and did not come back within "
    "its grace time (`audio.device_grace_s`, `camera.device_grace_s`); systemd restarts the "
    "service",
    CONFIG: "the config file or the key is wrong: fix it, restarting will not "
    "(systemd does not restart on it)",
    INTERRUPTED: "stopped with Ctrl-C",
}
