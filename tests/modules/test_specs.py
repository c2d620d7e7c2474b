import pytest

from quantlib.specs import QGranularity, QHParamsInitStrategy, QRange, QuantiserSpec


@pytest.mark.parametrize("spec, n_levels, offset, step, lo, hi", [
    ({"bitwidth": 8, "signed": True}, 256, -128, 1, -128, 127),
    ({"bitwidth": 7, "signed": False}, 128, 0, 1, 0, 127),
    ({"limpbitwidth": 8, "signed": True}, 255, -127, 1, -127, 127),
    ({"n_levels": 5, "offset": -2}, 5, -2, 1, -2, 2),
    ({"bitwidth": 6, "offset": -32}, 64, -32, 1, -32, 31),
    ("ternary", 3, -1, 1, -1, 1),
    ("binary", 2, -1, 2, -1, 1),
])
def test_qrange_from_spec(spec, n_levels, offset, step, lo, hi):
    r = QRange.from_spec(spec)
    assert (r.n_levels, r.offset, r.step, r.min, r.max) == (n_levels, offset, step, lo, hi)


def test_qrange_without_offset_has_a_learned_offset():
    r = QRange.from_spec({"bitwidth": 4})
    assert r.n_levels == 16 and r.offset is None and not r.is_signed
    with pytest.raises(ValueError, match="learned offset"):
        _ = r.min


@pytest.mark.parametrize("spec, message", [
    ({"bitwidth": 8, "n_levels": 4}, r"exactly one of \('bitwidth', 'limpbitwidth', 'n_levels'\)"),
    ({"bits": 8}, r"key\(s\) \['bits'\] are not allowed"),
    ({"bitwidth": 0}, "key 'bitwidth' has value 0; it must be an integer >= 1"),
    ({"bitwidth": 8.0}, "key 'bitwidth' has value 8.0"),
    ({"n_levels": 1}, "key 'n_levels' has value 1; it must be an integer >= 2"),
    ({"bitwidth": 8, "signed": "yes"}, "key 'signed' has value 'yes'; it must be true or false"),
    ({"bitwidth": 8, "signed": True, "offset": 0}, "at most one of"),
    ("quaternary", "QRange spec 'quaternary' is not allowed: use 'binary', 'ternary'"),
])
def test_bad_qrange_spec_names_key_value_and_what_is_allowed(spec, message):
    with pytest.raises(ValueError, match=message):
        QRange.from_spec(spec)


def test_granularity_specs():
    assert QGranularity.from_spec("per-array").dims == ()
    assert QGranularity.from_spec("per-outchannel_weights").dims == (0,)
    assert QGranularity.from_spec((3, 1)).dims == (1, 3)
    with pytest.raises(ValueError, match="QGranularity spec 'per-channel' is not allowed"):
        QGranularity.from_spec("per-channel")
    with pytest.raises(ValueError, match="repeats a dimension"):
        QGranularity.from_spec((1, 1))


def test_init_strategy_specs_and_defaults():
    assert QHParamsInitStrategy.from_spec("minmax") == QHParamsInitStrategy("minmax", {})
    assert QHParamsInitStrategy.from_spec("meanstd").params == {"n_std": 3.0}
    assert QHParamsInitStrategy.from_spec(("meanstd", {"n_std": 2})).params == {"n_std": 2}
    assert QHParamsInitStrategy.from_spec({"name": "const", "a": -1, "b": 1}).params == {"a": -1, "b": 1}
    assert QHParamsInitStrategy.from_spec("percentile").params == {"q": 99.99}


@pytest.mark.parametrize("spec, message", [
    ("median", r"name 'median' is not allowed; allowed: \['const', 'meanstd', 'minmax', 'mse', 'percentile'\]"),
    ("const", r"'const' needs \['a', 'b'\]"),
    ({"name": "const", "a": 1, "b": 0}, "needs a < b"),
    ({"name": "meanstd", "k": 3}, r"'meanstd' does not take \['k'\]; it takes \['n_std'\]"),
    ({"name": "meanstd", "n_std": -1}, "key 'n_std' has value -1; it must be > 0"),
    ({"name": "percentile", "q": 20}, "key 'q' has value 20; it must be in"),
    ({"name": "minmax", "n_std": 1}, "it takes no parameters"),
    (42, "spec 42 is not allowed"),
])
def test_bad_init_strategy_spec(spec, message):
    with pytest.raises(ValueError, match=message):
        QHParamsInitStrategy.from_spec(spec)


def test_quantiser_spec_defaults_and_errors():
    s = QuantiserSpec.from_spec({"qrange": {"bitwidth": 8, "signed": True}})
    assert s.granularity.dims == () and s.init.name == "minmax" and s.qop == "floor"
    with pytest.raises(ValueError, match=r"key\(s\) \['bits'\] are not allowed"):
        QuantiserSpec.from_spec({"qrange": "ternary", "bits": 2})
    with pytest.raises(ValueError, match="must be a dict with key 'qrange'"):
        QuantiserSpec.from_spec({"granularity": "per-array"})
