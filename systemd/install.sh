#!/usr/bin/env bash
# Install, upgrade or remove edge-daemon as a systemd service. Run as root from a
# checkout; `systemd/install.sh --help` says how. Safe to run again: a second run
# upgrades the code, keeps the owner's config and key, and restarts the service
# only if it was running.
set -euo pipefail

readonly SERVICE=edge-daemon
readonly SERVICE_USER=edge-daemon
readonly SERVICE_GROUPS=(audio video gpio)
readonly PREFIX=/opt/edge-daemon
readonly VENV=$PREFIX/venv
readonly CONF_DIR=/etc/edge-daemon
readonly CONFIG=$CONF_DIR/config.toml
readonly KEY_FILE=$CONF_DIR/gemini-api-key
readonly MQTT_PASSWORD_FILE=$CONF_DIR/mqtt-password
readonly STATE_DIR=/var/lib/edge-daemon
readonly UNIT=/etc/systemd/system/$SERVICE.service
readonly DROPIN_DIR=/etc/systemd/system/$SERVICE.service.d
readonly COMMAND_LINK=/usr/local/bin/edge-daemon
# The system's Python, not whatever `python3` a login shell finds first: the venv
# must see apt's python3-systemd, python3-pyaudio, numpy, Pillow, lgpio and picamera2.
readonly PYTHON=${EDGE_DAEMON_PYTHON:-/usr/bin/python3}

# numpy and Pillow from apt too: built for this machine, where pip would need a
# compiler (PyPI has no armv7 wheels) or piwheels' wheels and their libraries.
readonly APT_REQUIRED=(python3 python3-venv python3-systemd python3-pyaudio python3-numpy python3-pil
    alsa-utils ca-certificates)
# Only in the Raspberry Pi OS archive: installed when apt knows them, else skipped.
readonly APT_OPTIONAL=(python3-lgpio python3-picamera2)

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly SRC

usage() {
    cat <<EOF
Usage: sudo systemd/install.sh [OPTIONS]

Installs edge-daemon from this checkout as the systemd service "$SERVICE":
system packages (apt), the system user $SERVICE_USER (groups: ${SERVICE_GROUPS[*]}),
a venv in $VENV, the unit $UNIT, the config
$CONFIG (only if there is none) and the API key in $KEY_FILE.
Run it again after \`git pull\` to upgrade.

Options:
  --api-key-file PATH  read the Gemini API key from PATH ("-" reads standard input).
                       Without it the key comes from \$GEMINI_API_KEY; with neither,
                       an existing key is kept.
  --mqtt-password-file PATH
                       read the MQTT broker's password from PATH ("-" reads standard
                       input); stored root-only in $MQTT_PASSWORD_FILE, for [mqtt] username.
                       Without it an existing password is kept.
  --no-apt             do not install system packages
  --no-start           install and enable nothing at boot; do not start the service
                       (a running service is still restarted onto the new code)
  --uninstall          stop and remove the service and $PREFIX; keep config, key and user
  --purge              remove everything: service, $PREFIX, $CONF_DIR,
                       $STATE_DIR and the user $SERVICE_USER
  -h, --help           show this help

The key is never printed. To pass it through sudo without putting it on a
command line: sudo --preserve-env=GEMINI_API_KEY systemd/install.sh
EOF
}

say() { printf '%s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

systemd_running() { [[ -d /run/systemd/system ]]; }

# ---------------------------------------------------------------- arguments

KEY_SOURCE=""
MQTT_SOURCE=""
DO_APT=1
DO_START=1
ACTION=install

while (($#)); do
    case $1 in
        --api-key-file)
            (($# >= 2)) || die "--api-key-file needs a path (or - for standard input)"
            KEY_SOURCE=$2
            shift
            ;;
        --api-key-file=*) KEY_SOURCE=${1#*=} ;;
        --mqtt-password-file)
            (($# >= 2)) || die "--mqtt-password-file needs a path (or - for standard input)"
            MQTT_SOURCE=$2
            shift
            ;;
        --mqtt-password-file=*) MQTT_SOURCE=${1#*=} ;;
        --no-apt) DO_APT=0 ;;
        --no-start) DO_START=0 ;;
        --uninstall) ACTION=uninstall ;;
        --purge) ACTION=purge ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
[[ $KEY_SOURCE != - || $MQTT_SOURCE != - || -t 0 ]] ||
    die "--api-key-file - and --mqtt-password-file - cannot both read a pipe: give one a file"

((EUID == 0)) || die "run as root (sudo $0)"

STAGE=""
KEY_TMP=""
SERVICE_PROBLEM=""
cleanup() {
    [[ -z $STAGE ]] || rm -rf -- "$STAGE"
    [[ -z $KEY_TMP ]] || rm -f -- "$KEY_TMP"
    rm -f -- "$UNIT.tmp"
}
trap cleanup EXIT

# ---------------------------------------------------------------- install steps

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

apt_knows() { apt-cache show "$1" >/dev/null 2>&1; }

install_packages() {
    step "System packages"
    if ((!DO_APT)); then
        say "skipped (--no-apt)"
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found: this installer is for Debian and Raspberry Pi OS (use --no-apt to skip)"
    export DEBIAN_FRONTEND=noninteractive
    local pkg missing=() optional=()
    for pkg in "${APT_REQUIRED[@]}"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "already installed: ${APT_REQUIRED[*]}"
    fi
    for pkg in "${APT_OPTIONAL[@]}"; do
        if pkg_installed "$pkg"; then
            say "already installed: $pkg"
        elif apt_knows "$pkg"; then
            optional+=("$pkg")
        else
            say "skipping $pkg: not in this system's package archive (it is in Raspberry Pi OS's)"
        fi
    done
    if ((${#optional[@]})); then
        say "installing ${optional[*]}"
        # Optional: without them the daemon still runs (other GPIO back ends, no camera).
        apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null ||
            warn "could not install ${optional[*]}; continuing without"
    fi
}

ensure_group() {
    if ! getent group "$1" >/dev/null; then
        groupadd --system "$1"
        say "created system group $1"
    fi
}

install_user() {
    step "Service user $SERVICE_USER"
    local group
    for group in "${SERVICE_GROUPS[@]}" "$SERVICE_USER"; do
        ensure_group "$group"
    done
    local joined
    joined=$(
        IFS=,
        printf '%s' "${SERVICE_GROUPS[*]}"
    )
    if getent passwd "$SERVICE_USER" >/dev/null; then
        usermod --append --groups "$joined" "$SERVICE_USER"
        say "exists; member of ${SERVICE_GROUPS[*]}"
    else
        useradd --system --gid "$SERVICE_USER" --groups "$joined" --home-dir "$STATE_DIR" \
            --no-create-home --shell /usr/sbin/nologin --comment "edge-daemon voice assistant" \
            "$SERVICE_USER"
        say "created; member of ${SERVICE_GROUPS[*]}"
    fi
}

venv_usable() {
    [[ -x $VENV/bin/python ]] || return 1
    grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" 2>/dev/null || return 1
    # A venv made by an older Python (after an OS upgrade) points at a gone interpreter.
    local want have
    want=$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')
    have=$("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null) || return 1
    [[ $want == "$have" ]]
}

install_code() {
    step "Program in $VENV"
    [[ -x $PYTHON ]] || die "$PYTHON not found: apt-get install python3 (or drop --no-apt)"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
        die "Python's venv module is missing: apt-get install python3-venv (or drop --no-apt)"
    install -d -m 0755 "$PREFIX"
    if ! venv_usable; then
        rm -rf -- "$VENV"
        # System site packages: python3-systemd, pyaudio, lgpio and picamera2 come from apt.
        "$PYTHON" -m venv --system-site-packages "$VENV"
        say "created the venv (with the system's site packages)"
    fi
    # pip builds in the source tree (build/, *.egg-info): build from a copy so the
    # owner's checkout does not fill with root-owned files.
    STAGE=$(mktemp -d)
    tar -C "$SRC" --exclude=__pycache__ -cf - pyproject.toml README.md edge_daemon |
        tar -C "$STAGE" -xf -
    say "installing the package and its Python dependencies (pip)"
    # The versions tested together, as wheels where there are any.
    local pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input --upgrade
        --prefer-binary --constraint "$SRC/systemd/constraints.txt")
    # An upgrade that fails half-way must leave the program that ran before:
    # pip works on the venv in place, so keep a copy to put back.
    local previous=""
    if [[ -x $VENV/bin/edge-daemon ]]; then
        previous="$VENV.previous"
        rm -rf -- "$previous"
        cp -a -- "$VENV" "$previous"
    fi
    # soxr (resampling for a sound card that cannot do 16/24 kHz) only as a
    # ready-made wheel: PyPI has none for 32-bit ARM (piwheels does). Without it
    # the daemon runs, and says so if a sound card needs resampling.
    if ! "${pip[@]}" --only-binary=soxr "$STAGE[resample,voice]" 2>/dev/null; then
        say "no soxr wheel for this machine: installing without resampling (use plughw: devices)"
        if ! "${pip[@]}" "$STAGE[voice]"; then
            if [[ -n $previous ]]; then
                rm -rf -- "$VENV"
                mv -- "$previous" "$VENV"
                die "pip could not install edge-daemon (see above); the version installed before is back in place"
            fi
            die "pip could not install edge-daemon (network to PyPI needed the first time; see above)"
        fi
    fi
    [[ -z $previous ]] || rm -rf -- "$previous"
    install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
    install -m 0644 "$SRC/config/edge-daemon.toml" "$PREFIX/config.example.toml"
    local version
    version=$("$VENV/bin/edge-daemon" --version) ||
        die "the installed $VENV/bin/edge-daemon does not run (error above)"
    say "installed: $version"
    # `edge-daemon doctor` and `edge-daemon ctl` on the PATH; never over someone else's file.
    if [[ ! -e $COMMAND_LINK || $(readlink "$COMMAND_LINK" || true) == "$VENV/bin/edge-daemon" ]]; then
        ln -sfn "$VENV/bin/edge-daemon" "$COMMAND_LINK"
        say "linked $COMMAND_LINK"
    else
        say "left $COMMAND_LINK alone (not ours); use $VENV/bin/edge-daemon"
    fi
}

install_config() {
    step "Configuration in $CONF_DIR"
    # Created 0755 the first time; after that its mode is the owner's choice.
    [[ -d $CONF_DIR ]] || install -d -m 0755 "$CONF_DIR"
    if [[ -e $CONFIG ]]; then
        say "kept your $CONFIG (the current example is $PREFIX/config.example.toml)"
    else
        # No secrets in it (the loader refuses them), so readable by all.
        install -m 0644 "$SRC/config/edge-daemon.toml" "$CONFIG"
        say "installed the example config as $CONFIG: edit it for your wiring"
    fi
}

# Copies the key from wherever it is into KEY_TMP. It never passes through a
# command line: file redirections, printenv (which gets the name, not the value)
# and the shell's own read/printf.
capture_key() {
    local key
    if [[ $KEY_SOURCE == - ]]; then
        if [[ -t 0 ]]; then
            IFS= read -r -s -p "Gemini API key (not shown): " key
            printf '\n' >&2
            printf '%s\n' "$key" >"$KEY_TMP"
        else
            cat >"$KEY_TMP"
        fi
        say "key read from standard input"
    elif [[ -n $KEY_SOURCE ]]; then
        [[ -r $KEY_SOURCE && ! -d $KEY_SOURCE ]] || die "cannot read the key file $KEY_SOURCE"
        cat -- "$KEY_SOURCE" >"$KEY_TMP"
        say "key read from $KEY_SOURCE"
    elif [[ -n ${GEMINI_API_KEY:-} ]]; then
        printenv GEMINI_API_KEY >"$KEY_TMP"
        say "key taken from \$GEMINI_API_KEY"
    else
        return 1
    fi
}

KEY_TAKEN=0
take_key_early() {
    local traced=0
    if [[ $- == *x* ]]; then
        traced=1
        set +x
    fi
    KEY_TMP=$(umask 077 && mktemp)
    if capture_key; then KEY_TAKEN=1; fi
    if ((traced)); then set -x; fi
}

install_key() {
    step "API key in $KEY_FILE"
    # The key must not show up in a trace either, whatever the caller asked for.
    local traced=0
    if [[ $- == *x* ]]; then
        traced=1
        set +x
    fi
    if ((KEY_TAKEN)); then
        grep -q '[^[:space:]]' "$KEY_TMP" || die "the key given is empty"
        (($(grep -c '[^[:space:]]' "$KEY_TMP") == 1)) ||
            die "the key file must hold only the key, on one line"
        chown root:root "$KEY_TMP"
        chmod 0600 "$KEY_TMP"
        mv -f -- "$KEY_TMP" "$KEY_FILE"
        KEY_TMP=""
        say "stored (root only, mode 0600); the service reads it as the systemd credential gemini-api-key"
    elif [[ -s $KEY_FILE ]] && grep -q '[^[:space:]]' "$KEY_FILE"; then
        say "kept the existing key"
    else
        # The unit's LoadCredential= fails the start if the file is missing; an
        # empty one loads, counts as "no key", and the daemon exits 78, which
        # RestartPreventExitStatus keeps from a restart loop.
        : >"$KEY_TMP"
        chmod 0600 "$KEY_TMP"
        mv -f -- "$KEY_TMP" "$KEY_FILE"
        KEY_TMP=""
        say "no key given: created an empty $KEY_FILE; the service will not start until it holds one."
        say "Add it later with:  sudo systemd/install.sh --api-key-file PATH   (or --api-key-file - to paste it)"
    fi
    chown root:root "$KEY_FILE"
    chmod 0600 "$KEY_FILE"
    if ((traced)); then set -x; fi
}

key_present() { grep -q '[^[:space:]]' "$KEY_FILE" 2>/dev/null; }

# The MQTT password, handled like the key: never on a command line, never
# printed, root only (0600); the unit hands it over as the credential
# mqtt-password. The file always exists (LoadCredential= fails a start on a
# missing one); empty means no password.
install_mqtt_password() {
    step "MQTT password in $MQTT_PASSWORD_FILE"
    local traced=0 tmp
    if [[ $- == *x* ]]; then
        traced=1
        set +x
    fi
    tmp=$(umask 077 && mktemp "$CONF_DIR/.mqtt-password.XXXXXX")
    KEY_TMP=$tmp # removed by cleanup if anything below dies
    if [[ $MQTT_SOURCE == - ]]; then
        if [[ -t 0 ]]; then
            local password
            IFS= read -r -s -p "MQTT password (not shown): " password
            printf '\n' >&2
            printf '%s\n' "$password" >"$tmp"
        else
            cat >"$tmp"
        fi
    elif [[ -n $MQTT_SOURCE ]]; then
        [[ -r $MQTT_SOURCE && ! -d $MQTT_SOURCE ]] || die "cannot read the MQTT password file $MQTT_SOURCE"
        cat -- "$MQTT_SOURCE" >"$tmp"
    fi
    if [[ -n $MQTT_SOURCE ]]; then
        grep -q '[^[:space:]]' "$tmp" || die "the MQTT password given is empty"
        (($(grep -c '' "$tmp") == 1)) ||
            die "the MQTT password file must hold only the password, on one line"
        mv -f -- "$tmp" "$MQTT_PASSWORD_FILE"
        say "stored (root only, mode 0600); the service reads it as the systemd credential mqtt-password"
    elif [[ -e $MQTT_PASSWORD_FILE ]]; then
        rm -f -- "$tmp"
        if grep -q '[^[:space:]]' "$MQTT_PASSWORD_FILE"; then
            say "kept the existing password"
        else
            say "none: the file is empty (set one with --mqtt-password-file if the broker needs it)"
        fi
    else
        mv -f -- "$tmp" "$MQTT_PASSWORD_FILE"
        say "none given: created an empty one (set it with --mqtt-password-file if the broker needs it)"
    fi
    KEY_TMP=""
    chown root:root "$MQTT_PASSWORD_FILE"
    chmod 0600 "$MQTT_PASSWORD_FILE"
    if ((traced)); then set -x; fi
}

install_unit() {
    step "systemd unit $UNIT"
    sed -e "s|^ExecStart=.*|ExecStart=$VENV/bin/edge-daemon run --config $CONFIG|" \
        -e "s#^\(ExecStartPre\|ExecStopPost\)=-.*safe-state.*#\1=-$VENV/bin/edge-daemon safe-state --config $CONFIG#" \
        "$SRC/systemd/$SERVICE.service" >"$UNIT.tmp"
    grep -qx "ExecStart=$VENV/bin/edge-daemon run --config $CONFIG" "$UNIT.tmp" ||
        die "systemd/$SERVICE.service has no ExecStart= line to point at the venv"
    if cmp -s "$UNIT.tmp" "$UNIT"; then
        rm -f "$UNIT.tmp"
        say "unchanged"
    else
        chmod 0644 "$UNIT.tmp"
        mv -f "$UNIT.tmp" "$UNIT"
        say "installed (ExecStart=$VENV/bin/edge-daemon run --config $CONFIG)"
    fi
    if [[ -d $DROPIN_DIR ]]; then
        say "note: local overrides in $DROPIN_DIR apply on top"
    fi
}

check_config() {
    # The new code checks the owner's config before the service is (re)started on it.
    if ! "$VENV/bin/edge-daemon" check-config --config "$CONFIG" >/dev/null; then
        warn "$CONFIG does not pass \`edge-daemon check-config\` (error above): fix it, then: sudo systemctl restart $SERVICE"
        return 1
    fi
}

activate() {
    step "Service $SERVICE"
    local config_ok=$1
    if ! systemd_running; then
        if ((DO_START)); then
            systemctl enable --quiet "$SERVICE"
            say "systemd is not running here (a chroot or an image build): enabled, it starts at boot"
        else
            say "systemd is not running here (a chroot or an image build): not enabled (--no-start)"
        fi
        return 0
    fi
    systemctl daemon-reload
    local was_active=0
    systemctl is-active --quiet "$SERVICE" && was_active=1
    if ((!DO_START)); then
        if ((!was_active)); then
            say "not started (--no-start). Start with: sudo systemctl enable --now $SERVICE"
        elif ((config_ok)); then
            # Its files were just replaced underneath it: run the new code, not a mix.
            systemctl restart "$SERVICE"
            say "restarted the running service onto the new code (--no-start starts nothing new)"
        else
            say "still running the old code: fix the config error above, then: sudo systemctl restart $SERVICE"
        fi
        return 0
    fi
    systemctl enable --quiet "$SERVICE"
    if ! key_present; then
        say "enabled, not started: there is no API key yet (see above), then: sudo systemctl restart $SERVICE"
        return 0
    fi
    if ((!config_ok)); then
        SERVICE_PROBLEM="enabled, not (re)started: the config has an error (see above)"
        return 0
    fi
    systemctl reset-failed "$SERVICE" 2>/dev/null || true
    if ((was_active)); then
        say "restarting onto the new code"
        systemctl restart "$SERVICE" || true
    else
        say "starting"
        systemctl start "$SERVICE" || true
    fi
    if systemctl is-active --quiet "$SERVICE"; then
        say "active (running) as $SERVICE_USER"
    else
        systemctl status --no-pager --lines=20 "$SERVICE" >&2 || true
        SERVICE_PROBLEM="installed, but the service did not start (status above)"
    fi
}

do_install() {
    [[ -f $SRC/pyproject.toml && -d $SRC/edge_daemon && -f $SRC/systemd/$SERVICE.service ]] ||
        die "$SRC does not look like an edge-daemon checkout (run systemd/install.sh from one)"
    case "$(realpath -- "$SRC")/" in
        "$(realpath -m -- "$PREFIX")"/*)
            die "the checkout $SRC lies inside $PREFIX, which the installer replaces and --uninstall removes: clone it elsewhere (e.g. ~/edge-daemon)" ;;
    esac
    say "edge-daemon installer: from $SRC"
    # The key is read before anything else runs, and then leaves the
    # environment: apt's maintainer scripts and pip's builds never see it.
    take_key_early
    unset GEMINI_API_KEY
    install_packages
    install_user
    install_code
    install_config
    install_key
    install_mqtt_password
    install_unit
    local config_ok=1
    check_config || config_ok=0
    activate "$config_ok"
    step "Next"
    say "check the device:   sudo edge-daemon doctor"
    say "follow the log:     journalctl -u $SERVICE -f"
    say "edit the config:    sudoedit $CONFIG && sudo systemctl restart $SERVICE"
    [[ -z $SERVICE_PROBLEM ]] || die "$SERVICE_PROBLEM"
}

do_uninstall() {
    step "Removing the service and $PREFIX"
    if systemd_running; then
        systemctl disable --now --quiet "$SERVICE" 2>/dev/null || true
    else
        systemctl disable --quiet "$SERVICE" 2>/dev/null || true
    fi
    rm -f -- "$UNIT"
    rm -rf -- "$PREFIX"
    if [[ $(readlink "$COMMAND_LINK" || true) == "$VENV/bin/edge-daemon" ]]; then
        rm -f -- "$COMMAND_LINK"
    fi
    if systemd_running; then
        systemctl daemon-reload
        systemctl reset-failed "$SERVICE" 2>/dev/null || true
    fi
    say "removed $UNIT and $PREFIX"
}

do_purge() {
    do_uninstall
    step "Removing configuration, key, state and the user"
    rm -rf -- "$DROPIN_DIR" "$CONF_DIR" "$STATE_DIR" "/run/$SERVICE"
    if getent passwd "$SERVICE_USER" >/dev/null; then
        userdel "$SERVICE_USER"
    fi
    if getent group "$SERVICE_USER" >/dev/null; then
        groupdel "$SERVICE_USER"
    fi
    if systemd_running; then
        systemctl daemon-reload
    fi
    say "removed $CONF_DIR, $STATE_DIR and the user $SERVICE_USER (the shared groups ${SERVICE_GROUPS[*]} stay)"
}

case $ACTION in
    install) do_install ;;
    uninstall)
        do_uninstall
        say "kept $CONF_DIR (config and key), $STATE_DIR and the user $SERVICE_USER; --purge removes them"
        ;;
    purge) do_purge ;;
    *) die "internal error: unknown action $ACTION" ;;
esac
