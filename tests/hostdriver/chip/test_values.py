"""Range-checked values: every violation names the value type, the value, the range and where."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostdriver.chip.values import (
    BackgroundPeriod,
    CADCOffset,
    CapMemValue,
    Label,
    MADCPeriod,
    RefractoryClock,
    RowMode,
    SynapseAddress,
    Weight,
    check_enum_array,
    enum_value,
)
from protocol.errors import ConfigError


def test_capmem_1023_is_refused_with_field_coordinate_and_range():
    assert CapMemValue(1022) == 1022
    with pytest.raises(ConfigError) as e:
        CapMemValue(1023, "NeuronCell.V_LEAK of neuron 17")
    assert str(e.value) == (
        "CapMemValue 1023 out of range 0..1022 for NeuronCell.V_LEAK of neuron 17"
    )
    assert e.value.value == 1023 and e.value.valid == "0..1022"
    assert e.value.field == "NeuronCell.V_LEAK of neuron 17"


@pytest.mark.parametrize(
    ("kind", "good", "bad", "text"),
    [
        (Weight, 63, 64, "Weight 64 out of range 0..63"),
        (SynapseAddress, 0, -1, "SynapseAddress -1 out of range 0..63"),
        (Label, 16383, 16384, "Label 16384 out of range 0..16383"),
        (CADCOffset, -128, 128, "CADCOffset 128 out of range -128..127"),
        (CADCOffset, 127, -129, "CADCOffset -129 out of range -128..127"),
        (RefractoryClock, 15, 16, "RefractoryClock 16 out of range 0..15"),
        (MADCPeriod, 0, 3, "MADCPeriod 3 out of range 4..65535 or 0"),
        (BackgroundPeriod, 1, -1, "BackgroundPeriod -1 out of range 1..4294967295 or 0"),
    ],
)
def test_ranges(kind, good, bad, text):
    assert int(kind(good)) == good
    with pytest.raises(ConfigError, match=text):
        kind(bad)


def test_non_integers_are_refused():
    with pytest.raises(ConfigError, match="not an integer"):
        Weight(1.5)
    with pytest.raises(ConfigError, match="must be an integer"):
        Weight("3")
    assert Weight(3.0) == 3 and repr(Weight(3)) == "Weight(3)"


def test_check_array_names_first_offender_and_counts_the_rest():
    codes = np.zeros((512, 24), np.int64)
    codes[17, 0] = 1023
    codes[400, 3] = 5000
    with pytest.raises(ConfigError) as e:
        CapMemValue.check_array(codes, lambda i: f"cell {i[1]} of neuron {i[0]}")
    assert str(e.value) == (
        "CapMemValue 1023 out of range 0..1022 for cell 0 of neuron 17 (and 1 more out of range)"
    )
    with pytest.raises(ConfigError, match="nan"):
        Weight.check_array(np.array([1.0, np.nan]), "weights")


@given(st.lists(st.integers(-200, 1200), min_size=1, max_size=50))
def test_check_array_accepts_exactly_the_range(values):
    arr = np.array(values)
    if ((arr >= 0) & (arr <= 1022)).all():
        assert np.array_equal(CapMemValue.check_array(arr), arr)
    else:
        with pytest.raises(ConfigError, match="out of range 0..1022"):
            CapMemValue.check_array(arr)


def test_row_mode_enum():
    assert enum_value(RowMode, "excitatory") is RowMode.EXCITATORY
    assert enum_value(RowMode, 2) is RowMode.INHIBITORY
    with pytest.raises(ConfigError) as e:
        enum_value(RowMode, 3, "row 5")
    assert "RowMode 3 out of range 0..2 (0 DISABLED, 1 EXCITATORY, 2 INHIBITORY) for row 5" == str(
        e.value
    )
    with pytest.raises(ConfigError, match="RowMode 'sideways'"):
        enum_value(RowMode, "sideways")
    with pytest.raises(ConfigError, match=r"RowMode 3 .* for row 1 \(and 1 more"):
        check_enum_array(RowMode, [0, 3, 7], lambda i: f"row {i[0]}")
