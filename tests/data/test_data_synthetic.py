"""The gradient-demonstration datasets: concentric circles and bar images."""

import numpy as np
import pytest

from gradwatch.data.synthetic import make_bar_images_dataset, make_circles_dataset


def test_circles_have_two_radii_and_balanced_classes():
    circles = make_circles_dataset(400, noise=0.0, factor=0.4, seed=3)

    X = np.concatenate([circles.X_train, circles.X_val, circles.X_test])
    y = np.concatenate([circles.y_train, circles.y_val, circles.y_test])
    radii = np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(radii[y == 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(radii[y == 1], 0.4, atol=1e-5)
    assert X.dtype == np.float32 and y.dtype == np.int64 and circles.input_shape == (2,)
    assert circles.descriptor.class_counts == {"outer": 200, "inner": 200}


def test_circles_are_seeded():
    first, again = make_circles_dataset(seed=1), make_circles_dataset(seed=1)

    np.testing.assert_array_equal(first.X_train, again.X_train)
    assert not np.array_equal(first.X_train, make_circles_dataset(seed=2).X_train)


def test_bar_images_are_one_channel_and_their_classes_differ_in_orientation():
    images = make_bar_images_dataset(40, noise=0.0, seed=0)

    X, y = images.X_train, images.y_train
    assert X.shape[1:] == (1, 16, 16) and X.dtype == np.float32
    assert images.class_names == ["horizontal bars", "vertical bars", "blob"]
    row_spread = X[:, 0].mean(axis=2).std(axis=1)  # horizontal bars make whole rows bright
    column_spread = X[:, 0].mean(axis=1).std(axis=1)
    assert (row_spread[y == 0] > column_spread[y == 0]).all()
    assert (column_spread[y == 1] > row_spread[y == 1]).all()


@pytest.mark.parametrize("make", [make_circles_dataset, make_bar_images_dataset])
def test_descriptors_say_generated(make):
    descriptor = make(seed=4).descriptor

    assert descriptor.source == "generated" and descriptor.sha256 is None
    assert descriptor.name.startswith("synthetic-") and descriptor.generator["seed"] == 4
    assert sum(descriptor.split_counts.values()) == descriptor.n_rows
