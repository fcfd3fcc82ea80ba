"""peak_points keeps every column's lowest and highest sample and never more than two per column."""

import numpy as np

from gui.widgets.plots import peak_points


def test_few_samples_pass_as_they_are():
    x, y = np.arange(10.0), np.arange(10.0) ** 2
    shown_x, shown_y = peak_points(x, y, columns=5)  # 10 samples, 2 per column allowed
    assert shown_x is x and shown_y is y


def test_many_samples_become_two_per_column_and_keep_a_one_sample_spike():
    x = np.arange(3600.0) - 3599  # an hour at 1 Hz, "seconds ago"
    y = np.full(3600, 20.0)
    y[1234] = 95.0  # one sample's spike
    y[77] = 3.0  # and one dip
    shown_x, shown_y = peak_points(x, y, columns=400)
    assert len(shown_x) == len(shown_y) <= 2 * 400
    assert shown_y.max() == 95.0 and shown_y.min() == 3.0
    assert shown_x[0] == -3599 and shown_x[-1] == 0  # still spans the whole window, up to now
    assert np.all(np.diff(shown_x) >= 0)  # drawn left to right


def test_each_pair_is_the_extremes_of_its_column():
    y = np.array([5.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0])
    x = np.arange(9.0)
    shown_x, shown_y = peak_points(x, y, columns=3)  # columns of 3 samples
    assert shown_y.tolist() == [1.0, 9.0, 2.0, 8.0, 4.0, 7.0]
    assert shown_x.tolist() == [0.0, 2.0, 3.0, 5.0, 6.0, 8.0]


def test_readings_a_gpu_does_not_give_are_skipped():
    y = np.array([np.nan, 4.0, np.nan, np.nan, np.nan, np.nan, 2.0, np.nan, 6.0])
    _, shown_y = peak_points(np.arange(9.0), y, columns=3)
    assert shown_y[:2].tolist() == [4.0, 4.0]
    assert np.isnan(shown_y[2:4]).all()  # a column with no reading stays a gap
    assert shown_y[4:].tolist() == [2.0, 6.0]
