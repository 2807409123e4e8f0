"""Learning-rate schedules: the WebUI's piecewise syntax, named schedulers and warmup."""

import math

import pytest

from lib_ti.training.schedule import LRSchedule, parse_lr_schedule


# ---------------------------------------------------------------- parse_lr_schedule


def test_bare_number_runs_to_the_end():
    assert parse_lr_schedule("0.005", 1000) == [(0.005, 1000)]
    assert parse_lr_schedule(0.005, 1000) == [(0.005, 1000)]


def test_pieces():
    assert parse_lr_schedule("0.005:100, 1e-3:1000, 1e-5", 2000) == [(0.005, 100), (1e-3, 1000), (1e-5, 2000)]


def test_piece_minus_one_runs_to_the_end():
    assert parse_lr_schedule("0.01:50, 0.001:-1", 300) == [(0.01, 50), (0.001, 300)]


def test_pieces_past_the_end_are_dropped():
    assert parse_lr_schedule("0.005:100, 1e-3:1000, 1e-5", 500) == [(0.005, 100), (1e-3, 1000)]


def test_blank_parts_and_spaces_ignored():
    assert parse_lr_schedule(" 0.005 : 100 ,, 0.001 ", 200) == [(0.005, 100), (0.001, 200)]


@pytest.mark.parametrize("text", ["", "  ", ",", " , , "])
def test_empty(text):
    with pytest.raises(ValueError, match="empty"):
        parse_lr_schedule(text, 100)


@pytest.mark.parametrize("text", ["0.005:100, 0.001:100", "0.005:100, 0.001:50"])
def test_steps_must_increase(text):
    with pytest.raises(ValueError, match="increase"):
        parse_lr_schedule(text, 1000)


@pytest.mark.parametrize("text", ["-0.005", "0", "0.005:100, -1e-3:200", "inf", "nan"])
def test_rates_must_be_positive(text):
    with pytest.raises(ValueError, match="positive numbers"):
        parse_lr_schedule(text, 1000)


@pytest.mark.parametrize("text", ["0.005:0", "0.005:-5"])
def test_steps_must_be_positive(text):
    with pytest.raises(ValueError, match="steps in a schedule must be positive"):
        parse_lr_schedule(text, 1000)


@pytest.mark.parametrize("text", ["abc", "1.2x", "0.005:abc", "0.005:100:200", "0.005:1.5", "five"])
def test_garbage(text):
    with pytest.raises(ValueError) as info:
        parse_lr_schedule(text, 1000)
    assert repr(text) in str(info.value) and "0.005:100" in str(info.value)


# ---------------------------------------------------------------- LRSchedule


def test_piecewise_switches_at_the_step():
    s = LRSchedule("0.005:100, 1e-3:1000, 1e-5", 2000)
    assert s.rate(0) == 0.005
    assert s.rate(99) == 0.005
    assert s.rate(100) == 1e-3
    assert s.rate(999) == 1e-3
    assert s.rate(1000) == 1e-5
    assert s.rate(1999) == 1e-5


def test_piecewise_after_the_last_piece_keeps_its_rate():
    s = LRSchedule("0.005:100, 1e-3:200", 1000)
    assert s.rate(500) == 1e-3


def test_constant_stays():
    s = LRSchedule("0.005", 1000, "constant")
    assert {s.rate(step) for step in range(0, 1001, 37)} == {0.005}


def test_constant_with_warmup():
    s = LRSchedule(0.01, 100, "constant_with_warmup", warmup_steps=10)
    assert s.rate(0) == pytest.approx(0.001)
    assert s.rate(50) == pytest.approx(0.01)


def test_warmup_ramps_linearly():
    lr, warmup = 0.01, 10
    s = LRSchedule(lr, 100, "constant", warmup_steps=warmup)
    rates = [s.rate(step) for step in range(warmup)]
    assert rates[0] == pytest.approx(lr / warmup)
    assert rates[-1] == pytest.approx(lr)
    diffs = [b - a for a, b in zip(rates, rates[1:])]
    assert all(d == pytest.approx(lr / warmup) for d in diffs)
    assert s.rate(warmup) == pytest.approx(lr)
    assert s.rate(99) == pytest.approx(lr)


def test_linear_decays_to_zero():
    s = LRSchedule(0.01, 100, "linear")
    assert s.rate(0) == pytest.approx(0.01)
    assert s.rate(50) == pytest.approx(0.005)
    assert s.rate(99) == pytest.approx(0.0001)
    assert s.rate(100) == pytest.approx(0.0, abs=1e-12)
    rates = [s.rate(step) for step in range(101)]
    assert all(b < a for a, b in zip(rates, rates[1:]))


def test_linear_with_warmup_starts_after_warmup():
    s = LRSchedule(0.01, 110, "linear", warmup_steps=10)
    assert s.rate(0) == pytest.approx(0.001)
    assert s.rate(10) == pytest.approx(0.01)
    assert s.rate(60) == pytest.approx(0.005)
    assert s.rate(110) == pytest.approx(0.0, abs=1e-12)


def test_cosine():
    s = LRSchedule(0.01, 100, "cosine")
    assert s.rate(0) == pytest.approx(0.01)
    assert s.rate(50) == pytest.approx(0.005)
    assert s.rate(100) == pytest.approx(0.0, abs=1e-12)
    assert s.rate(99) < 0.0001
    assert s.rate(25) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_cosine_with_restarts_restarts():
    s = LRSchedule(0.01, 100, "cosine_with_restarts", num_cycles=2)
    assert s.rate(0) == pytest.approx(0.01)
    assert s.rate(25) == pytest.approx(0.005)
    assert s.rate(49) < 0.0002
    assert s.rate(50) == pytest.approx(0.01)
    assert s.rate(100) == 0.0


def test_polynomial():
    s = LRSchedule(0.01, 100, "polynomial", power=2.0)
    assert s.rate(0) == pytest.approx(0.01)
    assert s.rate(50) == pytest.approx(0.0025)
    assert s.rate(100) == pytest.approx(0.0)


def test_named_scheduler_multiplies_piecewise_rate():
    s = LRSchedule("0.01:50, 0.001", 100, "linear")
    assert s.rate(25) == pytest.approx(0.01 * 0.75)
    assert s.rate(50) == pytest.approx(0.001 * 0.5)


def test_unknown_scheduler():
    s = LRSchedule(0.01, 100, "onecycle")
    with pytest.raises(ValueError, match="onecycle"):
        s.rate(10)


def test_invalid_rate_refused_at_construction():
    with pytest.raises(ValueError):
        LRSchedule("1.2x", 100)
