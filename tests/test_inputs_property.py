"""Property: any image-like input to ``lens.trace`` works or raises a documented error, never a NaN prediction.

The documented errors for images are ``ValueError`` and ``TypeError`` (docs/errors.md).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import vitlens_widgets as vl

DOCUMENTED = (ValueError, TypeError)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def lens():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny forward passes: one thread is fastest on a busy machine
    yield vl.Lens(vl.Lens.demo().model, cache_size=0)
    torch.set_num_threads(threads)


def traced_or_documented_error(lens: vl.Lens, image) -> None:
    """Trace ``image``; a trace must be finite, anything else must be a documented error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the 0..1-tensor hint is allowed
        try:
            trace = lens.trace(image)
        except DOCUMENTED as err:
            event(type(err).__name__)
            return
    event("traced")
    assert math.isfinite(trace.prediction.probability)
    assert np.isfinite(trace.output_logits).all()
    assert np.isfinite(trace.logits("resid")).all()
    assert trace.image.dtype == np.uint8 and trace.image.shape == (64, 64, 3)


OTHER_DTYPES = [np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]
DTYPES = st.one_of(st.sampled_from([np.uint8, np.uint16]), st.sampled_from(OTHER_DTYPES))  # half are accepted ones
SIDES = st.integers(0, 90)
ARRAY_SHAPES = st.one_of(
    st.tuples(st.integers(1, 90), st.integers(1, 90), st.sampled_from([3, 4])),  # drawn first: mostly valid
    st.tuples(SIDES, SIDES),
    st.tuples(SIDES, SIDES, st.sampled_from([0, 1, 2, 3, 4, 5])),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.integers(0, 5)),
    st.just(()),
)


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(ARRAY_SHAPES)
    elements = None
    if dtype.kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=8 * dtype.itemsize)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@SETTINGS
@given(image=arrays())
def test_any_numpy_array(lens, image):
    traced_or_documented_error(lens, image)


@st.composite
def tensors(draw):
    size = draw(st.sampled_from([(64, 64), (64, 64), (63, 64), (0, 0)]))
    channels = draw(st.sampled_from([3, 3, 3, 1, 4]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8]))
    kind = draw(st.sampled_from(["normalised", "normalised", "0..1", "0..255", "huge", "special"]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.rand((channels, *size), generator=generator, dtype=torch.float64)
    values = {
        "normalised": (values - 0.5) / 0.25,
        "0..1": values,
        "0..255": values * 255,
        "huge": values * draw(st.floats(1e3, 1e300)),
        "special": values,
    }[kind]
    if kind == "special" and values.numel():
        values.view(-1)[draw(st.integers(0, values.numel() - 1))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf])
        )
    return values.to(dtype)


@SETTINGS
@given(image=tensors())
def test_any_tensor(lens, image):
    traced_or_documented_error(lens, image)


PIL_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV", "LAB"]


@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(PIL_MODES))
    size = (draw(SIDES), draw(SIDES))
    image = Image.new(mode, size)
    if size[0] and size[1]:
        if mode in ("I", "I;16"):
            high = 2**31 - 1 if mode == "I" else 65535
            value = draw(st.integers(-(2**31) if mode == "I" else 0, high))
        elif mode == "F":
            value = draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
        else:
            value = None
        if value is not None:
            image.putpixel((0, 0), value)
    return image


@SETTINGS
@given(image=pil_images())
def test_any_pil_image(lens, image):
    traced_or_documented_error(lens, image)


@SETTINGS
@given(path=st.text(max_size=40))
def test_any_path_string(lens, path):
    """Random strings: a missing file is FileNotFoundError (documented too), nothing else leaks."""
    with contextlib.suppress(FileNotFoundError):
        traced_or_documented_error(lens, path)
