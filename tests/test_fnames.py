"""fname_from_params: stable, safe, bounded, readable data file names."""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest

import adaptive_runner as ar
from adaptive_runner.errors import ConfigError
from adaptive_runner.fnames import params_from_fname

SAFE = re.compile(r"[A-Za-z0-9._+-]+")


def test_readable_and_the_same_in_any_key_order() -> None:
    assert ar.fname_from_params({"b": 0.5, "a": 1}) == "a_1__b_0.5.pickle"
    assert ar.fname_from_params({"a": 1, "b": 0.5}) == "a_1__b_0.5.pickle"
    name = ar.fname_from_params(
        {"n_max": np.int64(3), "x": np.float64(1e-5), "flag": True, "kind": "fermi"}, suffix=""
    )
    assert name == "flag_True__kind_fermi__n_max_3__x_1e-05"


@pytest.mark.parametrize(
    "params",
    [
        {"path": "a/b"},
        {"path": "../../etc"},
        {"s": "two words; rm -rf $HOME `x` 'q' \"q\" * ? ! & | < > ( ) ~ #"},
        {"name": "ünïcode"},
        {"_hidden": 1},
        {"-rf": 1},
        {"a b": 1},
        {"a__b": 1},
        {"v": "x_y"},
        {"v": ""},
    ],
)
def test_unsafe_characters_are_replaced_and_the_name_is_marked(params: dict[str, str]) -> None:
    name = ar.fname_from_params(params)
    stem = name.removesuffix(".pickle")
    assert SAFE.fullmatch(stem), name
    assert not stem.startswith((".", "-"))
    assert re.search(r"__h[0-9a-f]{12}$", stem), name  # changed: a hash keeps it unique


def test_distinct_params_give_distinct_names() -> None:
    variants: list[dict[str, object]] = [
        {"a": 1},
        {"a": "1"},
        {"a": 1.0},
        {"a": True},
        {"a": "True"},
        {"a": "x/y"},
        {"a": "x-y"},
        {"a": "x y"},
        {"a_b": 1},
        {"a": "b_1"},
        {"a": 1, "b": 2},
        {"a": "1__b_2"},
    ]
    names = [ar.fname_from_params(p) for p in variants]
    assert len(set(names)) == len(names), names


def test_long_names_are_cut_and_hashed() -> None:
    long = {f"parameter_{i}": i / 7 for i in range(30)}
    name = ar.fname_from_params(long, max_length=100)
    assert len(name) == 100 + len(".pickle")
    assert name.startswith("parameter_0_0.0__parameter_1_0.14285714285714285__")
    other = ar.fname_from_params(long | {"parameter_29": 0.0}, max_length=100)
    assert other != name  # differs only in the part that was cut
    assert len(ar.fname_from_params({"a": "x" * 1000})) == 120 + len(".pickle")


def test_refusals_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"params\['w'\]=None is a NoneType"):
        ar.fname_from_params({"a": 1, "w": None})
    with pytest.raises(ConfigError, match=r"params\['r'\]"):
        ar.fname_from_params({"r": Fraction(1, 3)})
    with pytest.raises(ConfigError, match=r"params\['l'\]"):
        ar.fname_from_params({"l": [1, 2]})
    with pytest.raises(ConfigError, match="keys must be str"):
        ar.fname_from_params({1: 1})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="params is empty"):
        ar.fname_from_params({})
    with pytest.raises(ConfigError, match="suffix="):
        ar.fname_from_params({"a": 1}, suffix="/x")
    with pytest.raises(ConfigError, match="max_length="):
        ar.fname_from_params({"a": 1}, max_length=5)


@pytest.mark.parametrize(
    "params",
    [
        {"a": 1, "b": 0.5},
        {"flag": True, "kind": "fermi", "n_max": 3, "x": 1e-5},
        {"x": -1.5e-7, "y": float("inf"), "n": -2},
    ],
)
def test_params_read_back_from_the_names_they_made(params: dict[str, object]) -> None:
    for suffix in (".pickle", ".h5", ""):
        name = ar.fname_from_params(params, suffix=suffix)
        assert params_from_fname(f"data/sweep/{name}") == params, name


def test_params_read_back_as_their_types() -> None:
    parsed = params_from_fname("flag_False__n_3__x_3.0.pickle")
    assert parsed == {"flag": False, "n": 3, "x": 3.0}
    assert parsed is not None
    assert [type(v) for v in parsed.values()] == [bool, int, float]
    assert params_from_fname("peak_0.01.pickle") == {"peak": 0.01}  # written by hand


@pytest.mark.parametrize(
    "name",
    [
        ar.fname_from_params({"path": "a/b"}),  # hashed: the values are not all in the name
        ar.fname_from_params({f"key{i}": i for i in range(30)}),  # too long: hashed
        "b_1__a_2.pickle",  # keys out of order: not made by fname_from_params
        "a_007.pickle",  # not the shortest form of 7
        "a_+1.pickle",
        "l0.pickle",
        "a_.pickle",
        "_1.pickle",
        ".pickle",
        "a_1__a_2.pickle",
    ],
)
def test_other_names_read_back_as_none(name: str) -> None:
    assert params_from_fname(name) is None
