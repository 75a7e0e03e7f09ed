"""GPIO on gpiozero's mock pins: the push-to-talk button, the status LED, pin helpers.

Every press goes through the real gpiozero Button code path (drive_low /
drive_high on the mock pin). Waits are on conditions with timeouts; the only
real time spent is the button's own settle/min-press timers and gpiozero's
blink threads, all kept short.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from gpiozero import LED, Device, OutputDevice
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edge_daemon.config import ButtonConfig, StatusLedConfig
from edge_daemon.daemon import State
from edge_daemon.hardware import (
    STATE_PATTERNS,
    PushToTalk,
    StatusLed,
    make_pin_factory,
    pin_states,
)

# Short enough for fast tests, long enough that a press is unmistakably one.
FAST = ButtonConfig(bounce_s=0.01, min_press_s=0.03)


async def until(cond: Callable[[], bool], timeout_s: float = 3.0, what: str = "") -> None:
    """Wait for ``cond`` to hold; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.002)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.reset()


class Recorder:
    """on_press/on_release that note what fired and in which thread."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.threads: set[int] = set()

    def press(self) -> None:
        self.events.append("press")
        self.threads.add(threading.get_ident())

    def release(self) -> None:
        self.events.append("release")
        self.threads.add(threading.get_ident())


@pytest.fixture
async def make_ptt(
    factory: MockFactory,
) -> AsyncIterator[Callable[..., tuple[PushToTalk, Recorder]]]:
    made: list[PushToTalk] = []

    def make(cfg: ButtonConfig = FAST, *, start: bool = True) -> tuple[PushToTalk, Recorder]:
        rec = Recorder()
        ptt = PushToTalk(cfg, asyncio.get_running_loop(), rec.press, rec.release, factory)
        made.append(ptt)
        if start:
            ptt.start()
        return ptt, rec

    yield make
    for ptt in made:
        ptt.close()


# ---------------------------------------------------------------- push-to-talk


async def test_hold_press_and_release(make_ptt, factory: MockFactory) -> None:
    ptt, rec = make_ptt()
    pin = factory.pin(23)
    pin.drive_low()  # pull-up button: pressed connects the pin to ground
    await until(lambda: rec.events == ["press"], what="press")
    assert ptt.held and ptt.active
    pin.drive_high()
    await until(lambda: rec.events == ["press", "release"], what="release")
    assert not ptt.held and not ptt.active
    assert rec.threads == {threading.get_ident()}  # the loop's thread


async def test_pin_driven_from_another_thread_calls_back_in_the_loop(
    make_ptt, factory: MockFactory
) -> None:
    _, rec = make_ptt()
    pin = factory.pin(23)
    driver: set[int] = set()

    def drive(low: bool) -> None:
        driver.add(threading.get_ident())
        # gpiozero runs when_pressed right here, in this thread.
        pin.drive_low() if low else pin.drive_high()

    await asyncio.to_thread(drive, True)
    await until(lambda: rec.events == ["press"])
    await asyncio.to_thread(drive, False)
    await until(lambda: rec.events == ["press", "release"])
    assert threading.get_ident() not in driver
    assert rec.threads == {threading.get_ident()}


async def test_bounce_burst_is_not_a_press(make_ptt, factory: MockFactory) -> None:
    ptt, rec = make_ptt()
    pin = factory.pin(23)
    for _ in range(5):  # contacts chattering, ending released
        pin.drive_low()
        pin.drive_high()
    await until(lambda: ptt._settle is None, what="the contacts to settle")
    assert not ptt.held
    # A real press afterwards is exactly one turn: the burst left nothing behind.
    pin.drive_low()
    await until(lambda: rec.events == ["press"])
    pin.drive_high()
    await until(lambda: rec.events == ["press", "release"])


async def test_bouncy_press_is_one_press(make_ptt, factory: MockFactory) -> None:
    _, rec = make_ptt()
    pin = factory.pin(23)
    for _ in range(4):
        pin.drive_low()
        pin.drive_high()
    pin.drive_low()  # ... and it stays down
    await until(lambda: rec.events == ["press"])
    for _ in range(3):  # bouncing on the way up too
        pin.drive_high()
        pin.drive_low()
    pin.drive_high()
    await until(lambda: rec.events == ["press", "release"])


async def test_press_shorter_than_min_press_is_ignored(make_ptt, factory: MockFactory) -> None:
    # min_press_s is long so that a slow machine cannot accept the short press.
    ptt, rec = make_ptt(ButtonConfig(bounce_s=0.005, min_press_s=5.0))
    pin = factory.pin(23)
    pin.drive_low()
    await until(lambda: ptt.held, what="the press to settle")
    pin.drive_high()
    await until(lambda: not ptt.held, what="the release to settle")
    assert rec.events == []
    assert not ptt.active
    assert ptt._accept is None  # the min-press timer is gone, not just ignored


async def test_toggle_mode_alternates(make_ptt, factory: MockFactory) -> None:
    ptt, rec = make_ptt(ButtonConfig(mode="toggle", bounce_s=0.01, min_press_s=0.03))
    pin = factory.pin(23)
    expected: list[str] = []
    for event in ("press", "release", "press"):
        pin.drive_low()
        expected.append(event)
        await until(lambda: rec.events == expected, what=event)
        pin.drive_high()
        await until(lambda: not ptt.held)
        assert rec.events == expected  # letting go does nothing in toggle mode
    assert ptt.active


async def test_toggle_ignores_short_presses(make_ptt, factory: MockFactory) -> None:
    ptt, rec = make_ptt(ButtonConfig(mode="toggle", bounce_s=0.005, min_press_s=5.0))
    pin = factory.pin(23)
    pin.drive_low()
    await until(lambda: ptt.held)
    pin.drive_high()
    await until(lambda: not ptt.held)
    assert rec.events == [] and not ptt.active


async def test_polling_fallback_when_edge_events_never_fire(
    make_ptt, factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gpiozero #1090: under lgpio on some Bookworm setups when_pressed never
    # fires. Reproduce it by making the mock pin swallow its edge callbacks.
    pin = factory.pin(23)
    monkeypatch.setattr(pin, "_call_when_changed", lambda *args: None)
    ptt, rec = make_ptt(
        ButtonConfig(poll=True, poll_interval_s=0.005, bounce_s=0.01, min_press_s=0.03)
    )
    assert ptt._button.when_activated is None  # polling, not callbacks
    pin.drive_low()
    await until(lambda: rec.events == ["press"], what="a polled press")
    pin.drive_high()
    await until(lambda: rec.events == ["press", "release"], what="a polled release")
    assert rec.threads == {threading.get_ident()}


async def test_the_button_starts_no_thread_of_its_own(make_ptt, factory: MockFactory) -> None:
    # gpiozero's Button keeps a hold thread that wakes ten times a second for
    # as long as the daemon runs; an idle device must not pay for that.
    before = {t.ident for t in threading.enumerate()}
    _, rec = make_ptt()
    factory.pin(23).drive_low()
    await until(lambda: rec.events == ["press"], what="press")
    factory.pin(23).drive_high()
    await until(lambda: rec.events == ["press", "release"], what="release")
    assert {t.ident for t in threading.enumerate()} == before


async def test_sim_press_takes_the_gpiozero_path(make_ptt, factory: MockFactory) -> None:
    ptt, rec = make_ptt()
    ptt.sim_press()
    assert factory.pin(23).state is False  # the pin itself moved
    await until(lambda: rec.events == ["press"])
    ptt.sim_release()
    assert factory.pin(23).state is True
    await until(lambda: rec.events == ["press", "release"])


async def test_sim_press_without_pull_up_drives_high(make_ptt, factory: MockFactory) -> None:
    ptt, rec = make_ptt(ButtonConfig(pull_up=False, bounce_s=0.01, min_press_s=0.03))
    assert factory.pin(23).state is False
    ptt.sim_press()
    assert factory.pin(23).state is True
    await until(lambda: rec.events == ["press"])
    ptt.sim_release()
    await until(lambda: rec.events == ["press", "release"])


async def test_sim_press_needs_mock_pins(make_ptt, monkeypatch: pytest.MonkeyPatch) -> None:
    ptt, _ = make_ptt()
    real = ptt._button._pin
    monkeypatch.setattr(ptt._button, "_pin", object())  # stands in for a real chip's pin
    with pytest.raises(RuntimeError, match="--simulate"):
        ptt.sim_press()
    ptt._button._pin = real  # gpiozero's close() reads the pin's name


async def test_button_down_at_start_up_is_no_turn(make_ptt, factory: MockFactory) -> None:
    ptt, rec = make_ptt(start=False)
    factory.pin(23).drive_low()
    ptt.start()
    assert ptt.held
    factory.pin(23).drive_high()
    await until(lambda: not ptt.held)
    assert rec.events == []


async def test_close_silences_a_pending_press(make_ptt, factory: MockFactory) -> None:
    ptt, rec = make_ptt(ButtonConfig(bounce_s=0.005, min_press_s=5.0))
    factory.pin(23).drive_low()
    await until(lambda: ptt.held)
    ptt.close()
    ptt.close()  # idempotent
    factory.pin(23).drive_high()  # a closed button ignores its pin
    assert ptt._settle is None and ptt._accept is None
    assert rec.events == []


async def test_failing_handler_does_not_kill_the_button(
    factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def bad_press() -> None:
        calls.append("press")
        raise RuntimeError("boom")

    ptt = PushToTalk(
        FAST, asyncio.get_running_loop(), bad_press, lambda: calls.append("release"), factory
    )
    ptt.start()
    try:
        pin = factory.pin(23)
        pin.drive_low()
        await until(lambda: calls == ["press"])
        pin.drive_high()
        await until(lambda: calls == ["press", "release"])
        assert "push-to-talk handler failed" in caplog.text
    finally:
        ptt.close()


# ---------------------------------------------------------------- status LED


@pytest.fixture
def make_led(factory: MockFactory) -> Iterator[Callable[..., StatusLed]]:
    made: list[StatusLed] = []

    def make(**kw: object) -> StatusLed:
        led = StatusLed(StatusLedConfig(**kw), factory)  # type: ignore[arg-type]
        made.append(led)
        return led

    yield make
    for led in made:
        led.close()


def test_every_daemon_state_has_its_own_pattern() -> None:
    assert set(STATE_PATTERNS) == {s.value for s in State} | {"muted"}  # muted: not a state
    assert len(set(STATE_PATTERNS.values())) == len(STATE_PATTERNS)


@pytest.mark.parametrize("kind", ["led", "pwm", "rgb"])
def test_pattern_names_follow_the_state(make_led, kind: str) -> None:
    led = make_led(kind=kind, rgb_pins=(5, 6, 13) if kind == "rgb" else ())
    assert led.pattern == "off"
    for state in State:
        led.show(state)
        assert led.pattern == STATE_PATTERNS[state.value]
        assert led.state == state


@pytest.mark.parametrize(("active_high", "lit"), [(True, 1), (False, 0)])
@pytest.mark.parametrize("kind", ["led", "pwm"])
def test_listening_is_solid_on(make_led, factory, kind: str, active_high: bool, lit: int) -> None:
    led = make_led(kind=kind, active_high=active_high)
    assert factory.pin(25).state == 1 - lit  # constructed dark
    led.show("listening")
    assert factory.pin(25).state == lit


async def test_error_blinks_fast(make_led, factory: MockFactory) -> None:
    led = make_led(kind="led")
    pin = factory.pin(25)
    pin.clear_states()
    led.show("error")
    # 0.1 s on, 0.1 s off, on gpiozero's own thread.
    await until(lambda: len(pin.states) >= 5, what="the LED to toggle")
    values = [s.state for s in pin.states]
    assert all(a != b for a, b in itertools.pairwise(values))
    assert {bool(v) for v in values} == {True, False}


def test_pwm_idle_is_dim_and_steady(make_led, factory: MockFactory) -> None:
    led = make_led(kind="pwm", brightness=0.5)
    led.show("idle")
    assert led.pattern == "beacon"
    assert factory.pin(25).state == pytest.approx(0.05)  # 10 % of the 50 % ceiling
    led.show("listening")
    assert factory.pin(25).state == pytest.approx(0.5)  # brightness caps full on


async def test_pwm_thinking_breathes(make_led, factory: MockFactory) -> None:
    led = make_led(kind="pwm", brightness=0.8)
    pin = factory.pin(25)
    led.show("thinking")
    await until(lambda: any(0 < s.state < 0.8 for s in pin.states), what="an in-between PWM level")
    assert max(s.state for s in pin.states) <= 0.8 + 1e-9  # even the pulse honours brightness


async def test_plain_led_idle_is_a_short_beacon(make_led, factory: MockFactory) -> None:
    led = make_led(kind="led")
    pin = factory.pin(25)
    led.show("idle")
    await until(lambda: len(pin.states) >= 3, what="the first beacon flash")
    on, off = pin.states[1:3]
    assert on.state == 1 and off.state == 0  # a flash, then dark for most of 3 s


async def test_rgb_colour_per_state(make_led, factory: MockFactory) -> None:
    led = make_led(kind="rgb", rgb_pins=(5, 6, 13))
    red, green, blue = (factory.pin(n) for n in (5, 6, 13))
    led.show("listening")
    assert (red.state, green.state, blue.state) == (0, 1, 0)
    led.show("idle")
    assert (red.state, green.state) == (0, 0) and 0 < blue.state < 0.5
    red.clear_states()
    led.show("error")
    await until(lambda: len(red.states) >= 4, what="red to blink")
    assert green.state == 0 and blue.state == 0


def test_unknown_state_goes_dark(make_led, factory: MockFactory, caplog) -> None:
    led = make_led(kind="led")
    led.show("listening")
    with caplog.at_level(logging.WARNING):
        led.show("dreaming")
    assert led.pattern == "off"
    assert factory.pin(25).state == 0
    assert "dreaming" in caplog.text


def test_kind_none_claims_no_pin(make_led, factory: MockFactory) -> None:
    led = make_led()
    led.show("listening")
    assert led.pattern == "on"
    assert factory.pins == {}


def test_close_turns_it_off() -> None:
    # Plain mock pins: a closed MockPWMPin drops to 0 whatever the LED said,
    # which would hide an active-low LED left on.
    factory = MockFactory()
    led = StatusLed(StatusLedConfig(kind="led", active_high=False), factory)
    led.show("listening")
    assert factory.pin(25).state == 0
    led.close()
    led.close()
    assert factory.pin(25).state == 1  # active-low: high is off
    led.show("error")  # after close: ignored, not an error
    assert led.pattern == "off"


# ---------------------------------------------------------------- pins


def test_make_pin_factory() -> None:
    sim = make_pin_factory(True)
    assert isinstance(sim, MockFactory)
    assert sim.pin_class is MockPWMPin
    assert make_pin_factory(False) is None


def test_pin_states(factory: MockFactory) -> None:
    led = LED(17, pin_factory=factory)
    relay = OutputDevice(27, active_high=False, pin_factory=factory)
    led.on()
    try:
        states = pin_states(factory)
        assert states == {
            17: {"function": "output", "state": 1.0, "pwm": True},
            27: {"function": "output", "state": 1.0, "pwm": True},
        }
    finally:
        led.close()
        relay.close()


def test_pin_states_without_a_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Device, "pin_factory", None)
    assert pin_states(None) == {}
