"""Every construct of the README's table, as the pre-flight check decides it: a construct a target takes goes through
that target's whole flow exactly (DIANA: fake == integer == onnxruntime on the twin == the DORY file; generic: exact
== integer == onnxruntime); a construct it refuses is refused before anything else, naming the source line and the
fix. And the README's table is the one the pre-flight check makes."""

import linecache
import re
from pathlib import Path

import pytest
import torch

import quantlib.supported_constructs as catalogue
from quantlib.backends.diana.constructs import DIANA_CONSTRUCTS
from quantlib.backends.diana.diana_module import DianaModule
from quantlib.backends.onnx import export_integer_onnx, verify_onnxruntime
from quantlib.cli.constructs import TARGETS
from quantlib.errors import UnsupportedOpError
from quantlib.fake_quantisation import quantize
from quantlib.preflight import GENERIC
from quantlib.supported_constructs import EXAMPLES, construct_table, first_refusal
from quantlib.true_quantisation import pow2_integer_flow
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact

README = Path(__file__).parents[1] / "README.md"
VERDICTS = {e.spelling: (first_refusal(e, DIANA_CONSTRUCTS), first_refusal(e, GENERIC)) for e in EXAMPLES}


def _ids(examples):
    return [re.sub(r"\W+", "_", e.spelling)[:40] for e in examples]


def _inputs(example, n=16, seed=0):
    return torch.randn(n, *example.input_shape, generator=torch.Generator().manual_seed(seed))


def test_the_readme_table_is_the_one_the_preflight_check_makes():
    assert construct_table(TARGETS) in README.read_text()


def test_the_table_holds_what_the_issue_names():
    taken = {s for s, (d, g) in VERDICTS.items() if d is None and g is None}
    assert len(taken) == 15 and sum(g is None for _, g in VERDICTS.values()) == 16
    assert VERDICTS["torch.cat([x, y], 1)"][1] is None  # the generic path takes equally scaled concatenations
    assert VERDICTS["torch.cat([x, y], 1)"][0].startswith("DIANA has no concatenation of feature maps")


DIANA_TAKES = [e for e in EXAMPLES if VERDICTS[e.spelling][0] is None]
GENERIC_TAKES = [e for e in EXAMPLES if VERDICTS[e.spelling][1] is None]
REFUSED = [e for e in EXAMPLES if VERDICTS[e.spelling][1] is not None]


@pytest.mark.parametrize("example", DIANA_TAKES, ids=_ids(DIANA_TAKES))
def test_diana_computes_every_construct_it_takes_exactly(example, tmp_path):
    torch.manual_seed(0)
    x = _inputs(example)
    dm = DianaModule.from_fp_model(example.model(), x[:1])
    dm.calibrate([x]).map_scales([x]).clip_scales_pow2().map_to_hw([x]).integrize()
    result = dm.export(tmp_path / "out", "net", verify_on=x)
    assert result.mismatches == 0 and len(result.dory_comparisons) >= 2
    assert result.errors == []


@pytest.mark.parametrize("example", GENERIC_TAKES, ids=_ids(GENERIC_TAKES))
def test_the_generic_path_computes_every_construct_it_takes_exactly(example, tmp_path):
    x = _inputs(example, 32)
    flow = pow2_integer_flow(example.model(), x[:2], [x])
    assert [c for c in compare_fake_and_exact(flow.fake, flow.exact, x) if c.mismatches] == []
    exact_vs_integer = compare_exact_and_integer(flow.exact, flow.integer, x)
    exported = export_integer_onnx(flow.integer, x, tmp_path / "net.onnx")
    integer_vs_ort = verify_onnxruntime(flow.integer, exported, x)
    assert len(exact_vs_integer) >= 3 and [c for c in exact_vs_integer + integer_vs_ort if c.mismatches] == []


def _assert_refused_at_its_line(text, verdict):
    """The refusal's reason and fix are in ``text``, at a source line of the catalogue that holds the quoted code."""
    assert f"{verdict}\n" in text
    path, line, code = re.findall(r" at (\S+supported_constructs\.py):(\d+): (.*)\n", text)[0]
    assert Path(path) == Path(catalogue.__file__)
    assert linecache.getline(path, int(line)).strip() == code


@pytest.mark.parametrize("example", REFUSED, ids=_ids(REFUSED))
def test_every_refused_construct_is_refused_before_quantisation_with_its_line_and_fix(example):
    x = _inputs(example, 2)
    shapes = x[:1] if example.with_shapes else None
    with pytest.raises(UnsupportedOpError, match=r"construct\(s\) of this model have no form on DIANA") as diana:
        DianaModule.from_fp_model(example.model(), shapes)
    with pytest.raises(UnsupportedOpError, match=r"have no form on quantlib's integer path") as generic:
        quantize(example.model(), shapes)
    diana_verdict, generic_verdict = VERDICTS[example.spelling]
    _assert_refused_at_its_line(str(diana.value), diana_verdict)
    _assert_refused_at_its_line(str(generic.value), generic_verdict)


def test_diana_refuses_concatenation_at_its_line():
    [example] = [e for e in EXAMPLES if e.spelling == "torch.cat([x, y], 1)"]
    with pytest.raises(UnsupportedOpError) as error:
        DianaModule.from_fp_model(example.model(), _inputs(example, 1))
    assert "- cat (torch.cat) at " in str(error.value)
    _assert_refused_at_its_line(str(error.value), VERDICTS[example.spelling][0])
