"""The server's parameter EMA: the released model is the running average of the rounds."""

import numpy as np
import pytest

from server.ema import ParameterEMA


def test_average_of_rounds():
    ema = ParameterEMA(0.5)
    assert ema.update({"w": np.array([2.0], np.float32)})["w"] == pytest.approx([2.0])
    out = ema.update({"w": np.array([4.0], np.float32)})
    assert out["w"] == pytest.approx([3.0]) and out["w"].dtype == np.float32
    assert ema.update({"w": np.array([5.0], np.float32)})["w"] == pytest.approx([4.0])


def test_zero_decay_is_the_latest_model_and_bad_decay_is_refused():
    ema = ParameterEMA(0.0)
    ema.update({"w": np.ones(2)})
    assert ema.update({"w": np.zeros(2)})["w"] == pytest.approx([0.0, 0.0])
    with pytest.raises(ValueError, match="decay"):
        ParameterEMA(1.0)
