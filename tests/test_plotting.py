"""The console's pure plot helpers: decimation keeps spikes, smoothing, log scale, bands."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np

from labtui import plotting as P


def test_decimate_keeps_spikes_and_order():
    x = np.arange(10_000, dtype=float)
    y = np.sin(x / 300)
    y[4321] = 50.0  # one spike
    y[7777] = -40.0
    dx, dy = P.decimate(x, y, 200)
    assert len(dx) <= 200
    assert 50.0 in dy and -40.0 in dy
    assert np.all(np.diff(dx) > 0)
    assert dy.max() == y.max() and dy.min() == y.min()


def test_decimate_leaves_short_series_alone():
    dx, dy = P.decimate([1, 2, 3], [3.0, 1.0, 2.0], 100)
    assert list(dx) == [1, 2, 3] and list(dy) == [3.0, 1.0, 2.0]


def test_finite_drops_nan_and_inf():
    x, y = P.finite([1, 2, 3, 4], [1.0, math.nan, math.inf, 2.0])
    assert list(x) == [1, 4] and list(y) == [1.0, 2.0]


def test_smooth_is_unbiased_and_lags():
    flat = P.smooth([2.0] * 50)
    assert np.allclose(flat, 2.0)  # bias correction: no pull towards 0 at the start
    step = P.smooth([0.0] * 10 + [1.0] * 10, weight=0.8)
    assert step[10] < 1.0 and step[-1] > step[10]


def test_log_y_copes_with_zero_and_negative():
    y = P.log_y([100.0, 10.0, 0.0, -5.0, 1.0])
    assert list(y) == [2.0, 1.0, 0.0, 0.0, 0.0]
    assert len(P.log_y([0.0, -1.0])) == 0
    assert P.log_floor([0.0, 3.0], [0.5, -2.0]) == 0.5
    assert list(P.log_y([0.0, 10.0], floor=0.1)) == [-1.0, 1.0]


def test_log_ticks_label_real_values():
    ticks, labels = P.log_ticks(-1.2, 3.5)
    assert ticks == [-1.0, 0.0, 1.0, 2.0, 3.0]
    assert labels == ["0.1", "1", "10", "100", "1e+03"]
    ticks, labels = P.log_ticks(0.0, 0.5, count=3)
    assert labels[0] == "1" and labels[-1] == "3.16"


def test_group_band_mean_min_max_aligned_on_step():
    a = ([1, 2, 3], [10, 20, 30], [1.0, 2.0, 3.0])
    b = ([1, 2], [12, 22], [3.0, 4.0])
    x, mean, low, high = P.group_band([a, b])
    assert list(x) == [11, 21, 30]
    assert list(mean) == [2.0, 3.0, 3.0]
    assert list(low) == [1.0, 2.0, 3.0] and list(high) == [3.0, 4.0, 3.0]
    assert len(P.group_band([])[0]) == 0


def test_options_cycle_x_axis():
    opts = P.PlotOptions()
    seen = []
    for _ in range(3):
        seen.append(opts.x)
        opts = P.PlotOptions(x=opts.next_x())
    assert seen == ["step", "tokens", "elapsed_s"] and opts.x == "step"


def test_gauge_scale_and_durations():
    assert P.gauge_scale(None, 4.0) == 8.0
    assert P.gauge_scale(20.0, 4.0) == 23.0
    assert P.format_duration(3725) == "1h02m"
    assert P.format_duration(65) == "1m05s"
    assert P.format_duration(None) == "—"


def test_plotting_never_imports_textual():
    code = "import sys, labtui.plotting; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_spikes_fed_step_by_step_are_core_metrics_spikes():
    """The plots' incremental spike finder gives exactly core.metrics.spike_steps, whatever the
    chunks the steps arrive in, and starts over when a resumed run's curve is cut back."""
    from core.metrics import LOSS_SPIKE_FACTOR, spike_steps

    rng = np.random.default_rng(0)
    loss = list(3.0 * np.exp(-np.arange(600) / 150) + 1.0 + 0.05 * rng.random(600))
    for at in (60, 61, 200, 420, 599):
        loss[at] *= 2.5
    loss[300] = math.nan
    want = spike_steps(loss, LOSS_SPIKE_FACTOR)
    assert {60, 200, 420, 599} <= set(want)
    spikes = P.Spikes(LOSS_SPIKE_FACTOR)
    n = 0
    for chunk in (1, 7, 45, 3, 120, 50, 374):
        n += chunk
        assert spikes.update(loss[:n]) == spike_steps(loss[:n], LOSS_SPIKE_FACTOR)
    assert n == 600 and spikes.found == want
    assert spikes.update(loss[:250]) == spike_steps(loss[:250], LOSS_SPIKE_FACTOR)
